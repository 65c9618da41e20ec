"""Content verification's pure parts: which documents a run reads back, how fast, and how it is asked for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from depot_common.settings import load_settings
from depot_reconciler import cli
from depot_reconciler.endpoints import ReconcileRequest
from depot_reconciler.plan import selected_checks, verification_for
from depot_reconciler.settings import ReconcilerSettings
from depot_reconciler.verification import BURST_S, Pacer, Verification
from tests.unit.test_settings import env

__all__ = ["env"]  # the fixture: a valid environment

MIB = 1024 * 1024
DEFAULT_CHECKS = (
    "orphan_object",
    "missing_blob",
    "stale_upload",
    "unindexed",
    "ghost_index_entry",
    "stuck_outbox",
    "abandoned_multipart",
)


@dataclass
class FakeTime:
    """A clock that moves only when the pacer sleeps (or the test says so)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("sample", [0.01, 0.1, 0.5])
def test_a_sample_picks_about_its_share_and_the_same_seed_picks_the_same_documents(sample: float) -> None:
    """Over 20 000 documents a sample picks its share within 10 % (and ±30 for small ones); a seed replays it."""
    total = 20_000
    picked = Verification(sample=sample, bytes_per_s=MIB, seed=42).sampler()
    draws = [picked() for _ in range(total)]
    assert abs(sum(draws) - sample * total) <= max(0.1 * sample * total, 30)
    again = Verification(sample=sample, bytes_per_s=MIB, seed=42).sampler()
    assert [again() for _ in range(total)] == draws
    other = Verification(sample=sample, bytes_per_s=MIB, seed=43).sampler()
    assert [other() for _ in range(total)] != draws


def test_the_whole_sample_picks_every_document() -> None:
    """--verify-content is a sample of 1: no document is left out."""
    picked = Verification(sample=1.0, bytes_per_s=MIB).sampler()
    assert all(picked() for _ in range(10_000))


@pytest.mark.parametrize("sample", [0.0, -0.1, 1.01])
def test_a_sample_outside_zero_to_one_is_refused(sample: float) -> None:
    with pytest.raises(ValueError, match="share"):
        Verification(sample=sample, bytes_per_s=MIB)


async def test_the_pacer_reads_at_its_rate() -> None:
    """Reading 10 MiB in 1 MiB chunks (each read instantly) at 2 MiB/s waits 5 s in all, half a second a chunk."""
    time = FakeTime()
    pacer = Pacer(2 * MIB, clock=time.clock, sleep=time.sleep)
    started = time.now
    for _ in range(10):
        await pacer.spend(MIB)
    assert time.now - started == pytest.approx(5.0)
    assert time.sleeps == pytest.approx([0.5] * 10)


async def test_the_pacer_counts_time_spent_reading_and_lends_no_more_than_a_burst_after_idling() -> None:
    """Reads slower than the rate are not slowed further; an idle minute buys only BURST_S seconds of full speed."""
    time = FakeTime()
    pacer = Pacer(MIB, clock=time.clock, sleep=time.sleep)
    for _ in range(3):
        time.now += 2.0  # each 1 MiB chunk took 2 s to arrive: slower than 1 MiB/s
        await pacer.spend(MIB)
    assert time.sleeps == []
    time.now += 60.0  # a page of unsampled documents
    started = time.now
    for _ in range(10):
        await pacer.spend(MIB)
    assert time.now - started == pytest.approx(10.0 - BURST_S)


def test_content_mismatch_runs_only_when_asked() -> None:
    """No check named: the default checks, plus content_mismatch only with a sample; named: it runs."""
    assert selected_checks(None) == DEFAULT_CHECKS
    assert selected_checks(None, verify_sample=0.01) == (*DEFAULT_CHECKS, "content_mismatch")
    assert selected_checks(["missing_blob"], verify_sample=1.0) == ("missing_blob", "content_mismatch")
    assert selected_checks(["content_mismatch"]) == ("content_mismatch",)


def test_a_run_reads_back_its_sample_at_the_configured_pace_seeded_by_its_id() -> None:
    """The sample is the one asked (all when the check is named alone); none without the check."""
    settings = ReconcilerSettings.model_construct(reconcile_verify_bytes_per_s=12345)
    run_id = uuid.uuid4()
    assert verification_for(settings, DEFAULT_CHECKS, None, run_id) is None
    assert verification_for(settings, ("content_mismatch",), 0.25, run_id) == Verification(0.25, 12345, run_id.int)
    assert verification_for(settings, ("content_mismatch",), None, run_id) == Verification(1.0, 12345, run_id.int)


def test_the_cli_takes_one_verification_option_with_a_share() -> None:
    """--verify-content is the whole sample, --verify-sample a share in (0, 1]; both at once, or a bad share,
    exit 2 (argparse's usage error)."""
    parser = cli.build_parser()
    assert cli.verify_sample(parser.parse_args(["run"])) is None
    assert cli.verify_sample(parser.parse_args(["run", "--verify-content"])) == 1.0
    assert cli.verify_sample(parser.parse_args(["run", "--verify-sample", "0.01"])) == 0.01
    for bad in (["--verify-sample", "0"], ["--verify-sample", "1.5"], ["--verify-sample", "x"]):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["run", *bad])
        assert stop.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--verify-content", "--verify-sample", "0.5"])


def test_the_http_body_takes_one_verification_field_with_a_share() -> None:
    """verify_content → the whole sample; verify_sample → that share; both, or a share outside (0, 1], is a 422."""
    assert ReconcileRequest().sample is None
    assert ReconcileRequest(verify_content=True).sample == 1.0
    assert ReconcileRequest.model_validate({"verify_sample": 0.05}).sample == 0.05
    for bad in ({"verify_sample": 0}, {"verify_sample": 1.5}, {"verify_content": True, "verify_sample": 0.5}):
        with pytest.raises(ValidationError):
            ReconcileRequest.model_validate(bad)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEPOT_RECONCILE_VERIFY_BYTES_PER_S", "0", "greater than 0"),
        ("DEPOT_RECONCILE_VERIFY_BYTES_PER_S", "fast", "valid integer"),
        ("DEPOT_RECONCILE_SCHEDULE_VERIFY_SAMPLE", "1.5", "less than or equal to 1"),
        ("DEPOT_RECONCILE_SCHEDULE_VERIFY_SAMPLE", "-0.1", "greater than or equal to 0"),
    ],
)
def test_bad_verification_settings_stop_with_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, message: str
) -> None:
    """A pace that is not a positive integer or a scheduled sample outside [0, 1] stops the start, naming it."""
    env.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(ReconcilerSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert variable in err
    assert message in err
