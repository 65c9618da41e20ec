"""The chaos soak's fault schedule: reproducible, inside the workload, one outage at a time."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from depot_devstack.chaos.faults import FULL, SHORT, schedule
from depot_devstack.chaos.fleet import unhandled_errors
from depot_devstack.chaos.invariants import Verdict
from depot_devstack.chaos.workload import Acked, Ledger

SERVICES = ["upload-api-1", "indexer-1", "outbox-relay-1"]


def test_the_same_seed_gives_the_same_schedule() -> None:
    """A failing soak can be replayed: the seed fixes which faults happen, when, and to whom."""
    assert schedule(FULL, SERVICES, random.Random(7)) == schedule(FULL, SERVICES, random.Random(7))
    assert schedule(FULL, SERVICES, random.Random(7)) != schedule(FULL, SERVICES, random.Random(8))


def test_every_outage_kind_happens_each_cycle_without_overlapping_inside_the_workload() -> None:
    """Each cycle pauses S3, pauses the broker and crashes PostgreSQL once, one after another."""
    for profile in (SHORT, FULL):
        faults = schedule(profile, SERVICES, random.Random(3))
        outages = [fault for fault in faults if fault.kind != "kill"]
        assert sorted(fault.kind for fault in outages) == sorted(
            ["pause-s3", "pause-kafka", "crash-postgres"] * profile.cycles
        )
        for before, after in itertools.pairwise(outages):
            assert before.at + before.duration <= after.at
        assert outages[-1].at + outages[-1].duration <= profile.workload_s
        kills = [fault for fault in faults if fault.kind == "kill"]
        assert kills
        assert {fault.target for fault in kills} <= set(SERVICES)


def test_a_verdict_passes_only_when_every_violation_count_is_zero() -> None:
    """One lost document, one DLQ message or a dry run with findings fails the soak."""
    assert Verdict(acked=10, deleted=2, findings_after=0).ok
    assert not Verdict(acked=10, findings_after=-1).ok
    for name in (
        "lost",
        "orphans",
        "ghost",
        "unsearchable",
        "pending",
        "multipart",
        "dlq",
        "http5xx",
        "crashes",
        "unexpected",
    ):
        verdict = Verdict(acked=10, findings_after=0)
        verdict.add(name, "evidence")
        assert not verdict.ok, name
        assert f"{name}=1" in verdict.line()


def test_a_document_whose_delete_is_in_doubt_is_never_picked_again() -> None:
    """A DELETE that gave up may have been carried out: deleting or re-uploading that document again
    would get a correct 404 (or 201) that the soak would count as unexpected (seen in a FULL run)."""
    ledger = Ledger()
    for doc in ("kept", "in-doubt", "in-use", "gone"):
        ledger.acked[doc] = Acked("0" * 64, 1, "streamed", doc)
    ledger.delete_unanswered.add("in-doubt")
    ledger.busy.add("in-use")
    ledger.deleted.add("gone")
    assert ledger.choosable() == ["kept"]


def test_an_unhandled_error_in_any_service_log_is_a_server_error(tmp_path: Path) -> None:
    """A 500 nobody received (its client had timed out) still counts: it is in the service's log."""
    api = tmp_path / "upload-api-1.log"
    api.write_text(
        '{"event": "http.request", "status": 201}\n'
        '{"event": "http.unhandled_error", "timestamp": "t1", "exception": [{"exc_type": "ClientDisconnect", '
        '"exc_value": ""}]}\n'
        "a line that is not JSON\n"
    )
    relay = tmp_path / "outbox-relay-1.log"
    relay.write_text('{"event": "outbox.relay.active"}\n')
    found = unhandled_errors({"upload-api-1": api, "outbox-relay-1": relay, "indexer-1": tmp_path / "absent.log"})
    assert found == ["upload-api-1 log t1: ClientDisconnect: "]
