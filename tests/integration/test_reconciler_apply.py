"""Applying a plan re-checks each finding and emits compensations through the reconciler's outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from depot_common.events import COMPENSATIONS_TOPIC, EVENT_TYPES, RawCloudEvent
from depot_reconciler.apply import ApplyResult, SafetyStop, apply_plan
from depot_reconciler.plan import run_lock
from tests.integration.test_reconciler_plan import World, plan, plant_one_of_each, reconcile_world


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
