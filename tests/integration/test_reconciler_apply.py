"""Applying a plan re-checks each finding and emits compensations through the reconciler's outbox."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from depot_common.events import (
    COMPENSATIONS_TOPIC,
    DOCUMENTS_TOPIC,
    EVENT_TYPES,
    CloudEvent,
    DocumentStored,
    RawCloudEvent,
)
from depot_common.lifecycle import background_task
from depot_devstack import servers
from depot_indexer.bootstrap import indexer_consumer
from depot_indexer.settings import IndexerSettings
from depot_reconciler.apply import ApplyResult, SafetyStop, apply_plan
from depot_reconciler.bootstrap import run_relay as reconciler_relay
from depot_reconciler.plan import run_lock
from depot_upload.bootstrap import compensation_consumer
from depot_upload.bootstrap import run_relay as upload_relay
from depot_upload.settings import UploadSettings
from tests.integration.test_reconciler_plan import (
    DAY,
    World,
    plan,
    plant_one_of_each,
    reconcile_world,
    stored_findings,
)
from tests.invariants import measure_invariants


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


async def apply(world: World, run_id: uuid.UUID, *, max_fraction: float = 1.0, force: bool = False) -> ApplyResult:
    async with run_lock(world.pool) as conn:
        return await apply_plan(
            conn, world.s3, bucket=world.bucket, run_id=run_id, max_fraction=max_fraction, force=force
        )


async def outbox_events(world: World) -> set[tuple[str, str]]:
    """``(type, subject)`` of every event in reconcile.outbox, each validated against its data model."""
    rows = await world.pool.fetch("SELECT topic, key, value FROM reconcile.outbox ORDER BY id")
    events = set()
    for row in rows:
        assert row["topic"] == COMPENSATIONS_TOPIC
        event = RawCloudEvent.model_validate(row["value"])
        EVENT_TYPES[event.type].model_validate(event.data)
        assert row["key"] == event.subject
        events.add((event.type, event.subject))
    return events


async def test_apply_emits_one_compensation_per_finding_with_its_audit_record(world: World) -> None:
    """Each still-valid finding emits its compensation and an audit row; stuck_outbox is only reported."""
    await world.consistent_baseline()
    planted = await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0))
    applied = await apply(world, result.run_id)
    compensation = {
        "orphan_object": "compensation.orphan_object",
        "missing_blob": "compensation.missing_blob",
        "stale_upload": "compensation.stale_upload",
        "unindexed": "compensation.reindex",
        "ghost_index_entry": "compensation.ghost_index_entry",
        "abandoned_multipart": "compensation.abandoned_multipart",
    }
    expected = {(compensation[check], subject) for check, subject in planted if check in compensation}
    assert await outbox_events(world) == expected
    assert applied.reported == 1
    assert applied.skipped == {}
    audit = await world.pool.fetch("SELECT run_id, action, event_id FROM reconcile.audit")
    assert {(row["action"]) for row in audit} == set(compensation.values())
    assert len(audit) == len(expected)
    assert all(row["run_id"] == result.run_id and row["event_id"] is not None for row in audit)
    run = await world.pool.fetchrow("SELECT status, counts FROM reconcile.runs WHERE id = $1", result.run_id)
    assert run is not None
    assert run["status"] == "applied"
    assert run["counts"]["applied"]["reported"] == 1


async def test_a_finding_that_changed_since_the_plan_is_skipped(world: World) -> None:
    """A pending upload finalised and an orphan object claimed after the scan are skipped, not compensated."""
    planted = await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0), checks=["stale_upload", "orphan_object"])
    [stale] = [subject for check, subject in planted if check == "stale_upload"]
    [orphan_key] = [subject for check, subject in planted if check == "orphan_object"]
    await world.pool.execute(
        "UPDATE upload.documents SET status = 'stored', size_bytes = 10, version = version + 1,"
        " updated_at = clock_timestamp() WHERE id = $1",
        uuid.UUID(stale),
    )
    await world.document("pending", size=None, age=0, key=orphan_key)
    applied = await apply(world, result.run_id)
    assert applied.emitted == {}
    assert applied.skipped == {"stale_upload": 1, "orphan_object": 1}
    assert await outbox_events(world) == set()
    outcomes = await world.pool.fetch(
        "SELECT class, outcome FROM reconcile.findings WHERE run_id = $1 ORDER BY class", result.run_id
    )
    assert [(row["class"], row["outcome"]) for row in outcomes] == [
        ("orphan_object", "skipped: object now belongs to a pending document"),
        ("stale_upload", "skipped: document changed since the scan"),
    ]
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.audit WHERE action = 'skip'") == 2


async def test_safety_stop_refuses_an_abnormal_plan_unless_forced(world: World) -> None:
    """A plan touching more than the allowed share emits nothing and stays planned; --force applies it."""
    for _ in range(5):
        await world.stored()
    await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0))
    with pytest.raises(SafetyStop):
        await apply(world, result.run_id, max_fraction=0.05)
    assert await outbox_events(world) == set()
    assert await world.pool.fetchval("SELECT status FROM reconcile.runs WHERE id = $1", result.run_id) == "planned"
    applied = await apply(world, result.run_id, max_fraction=0.05, force=True)
    assert sum(applied.emitted.values()) == 7


async def test_a_plan_within_the_allowed_share_applies(world: World) -> None:
    """One finding among many consistent documents is under the safety share and applies without --force."""
    for _ in range(20):
        await world.stored(indexed=True)
    missing = await world.document("stored")
    await world.index_entry(missing)
    result = await plan(world, world.settings(reconcile_grace=0))
    applied = await apply(world, result.run_id, max_fraction=0.05)
    assert applied.emitted == {"missing_blob": 1}
    assert await outbox_events(world) == {("compensation.missing_blob", str(missing))}


async def real_document(world: World, status: str, body: bytes, *, version: int = 2, age: int = DAY) -> uuid.UUID:
    """A document row whose size and SHA-256 are those of ``body`` (no object written)."""
    document_id = await world.document(status, size=len(body), version=version, age=age)
    sha256 = hashlib.sha256(body).hexdigest()
    await world.pool.execute("UPDATE upload.documents SET sha256 = $2 WHERE id = $1", document_id, sha256)
    return document_id


async def plant_every_class(world: World) -> set[tuple[str, str]]:
    """A consistent document and one real-bytes inconsistency of every class; return the expected findings."""
    good = b"a consistent document\n"
    consistent = await real_document(world, "stored", good)
    await world.put_object(f"documents/{consistent}", good)
    await world.index_entry(consistent, version=2)
    orphan_key = f"documents/{uuid.uuid4()}"
    await world.put_object(orphan_key, b"nobody's bytes")
    missing = await real_document(world, "stored", b"bytes that were lost\n")
    await world.index_entry(missing, version=2)
    resized = await real_document(world, "stored", b"0123456789")
    await world.put_object(f"documents/{resized}", b"012")
    await world.index_entry(resized, version=2)
    stale = await world.document("pending", size=None, age=2 * DAY)
    await world.put_object(f"documents/{stale}", b"part of an upload")
    text = b"quarterly zeppelin inventory\n"
    unindexed = await real_document(world, "stored", text, version=3)
    await world.put_object(f"documents/{unindexed}", text)
    await world.index_entry(unindexed, version=2)
    ghost = await world.document("deleted", version=3)
    await world.index_entry(ghost, version=2)
    stuck = uuid.uuid4()  # a valid event no relay has published for an hour (a replay of consistent's)
    event = CloudEvent[DocumentStored](
        source="depot/upload-api",
        type="document.stored",
        subject=str(consistent),
        data=DocumentStored(
            document_id=consistent,
            owner_id="alice",
            filename="a.txt",
            content_type="text/plain",
            size_bytes=len(good),
            sha256=hashlib.sha256(good).hexdigest(),
            object_key=f"documents/{consistent}",
            version=2,
        ),
    )
    await world.pool.execute(
        "INSERT INTO upload.outbox (event_id, topic, key, value, created_at)"
        " VALUES ($1, $2, $3, $4, now() - interval '1 hour')",
        stuck,
        DOCUMENTS_TOPIC,
        str(consistent),
        event.model_dump(mode="json"),
    )
    return {
        ("orphan_object", orphan_key),
        ("missing_blob", str(missing)),
        ("missing_blob", str(resized)),
        ("stale_upload", str(stale)),
        ("unindexed", str(unindexed)),
        ("ghost_index_entry", str(ghost)),
        ("stuck_outbox", str(stuck)),
    }


async def test_every_class_is_repaired_end_to_end_by_the_owners_workers(
    world: World, make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    """Plant one of every class → dry run finds exactly them → apply → the reconciler's relay, upload-api's relay
    and compensation worker and the indexer consumer run → a second dry run finds nothing, invariants hold."""
    planted = await plant_every_class(world)
    [reindexed] = [uuid.UUID(subject) for check, subject in planted if check == "unindexed"]
    settings = world.settings(reconcile_grace=0)
    result = await plan(world, settings)
    assert await stored_findings(world, result.run_id) == planted
    applied = await apply(world, result.run_id, force=True)
    assert sum(applied.emitted.values()) == 6
    assert applied.reported == 1

    # the workers, on a broker of the test's own: they see only this world's events
    broker, bootstrap = servers.start_tansu(tmp_path)
    group = f"e2e-{secrets.token_hex(4)}"
    common = {"database_url": world.database_url, "s3_bucket": world.bucket, "kafka_bootstrap": bootstrap}
    reconciler_settings = world.settings(reconcile_grace=0, relay_poll_interval=1, kafka_bootstrap=bootstrap)
    upload_settings: UploadSettings = make_settings(
        UploadSettings,
        **common,
        compensations_group=f"{group}-upload",
        consumer_session_timeout=2,
        relay_poll_interval=1,
    )
    indexer_settings: IndexerSettings = make_settings(
        IndexerSettings, **common, consumer_group=f"{group}-indexer", consumer_session_timeout=2
    )
    report = None
    try:
        async with (
            background_task(reconciler_relay(reconciler_settings)),
            background_task(upload_relay(upload_settings)),
            compensation_consumer(upload_settings) as (compensations, _),
            background_task(compensations.run()),
            indexer_consumer(indexer_settings) as indexer,
            background_task(indexer.run()),
        ):
            for _ in range(120):  # until the pipeline has drained and the invariants hold, or a minute
                report = await measure_invariants(world.pool, world.s3, settings, invariants=frozenset({1, 2, 3, 4}))
                if not report.violations:
                    break
                await asyncio.sleep(0.5)
    finally:
        broker.stop()
    assert report is not None
    assert report.violations == []
    report = await measure_invariants(world.pool, world.s3, settings, invariants=frozenset({1, 2, 3, 4, 6, 7}))
    assert report.violations == []
    assert (report.stored, report.objects, report.index_entries) == (2, 2, 2)
    body = await world.pool.fetchval("SELECT body FROM search.index_entries WHERE document_id = $1", reindexed)
    assert "zeppelin" in body
    unpublished = "SELECT count(*) FROM {}.outbox"
    assert [await world.pool.fetchval(unpublished.format(schema)) for schema in ("upload", "reconcile")] == [0, 0]
