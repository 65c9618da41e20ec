"""A reconcile run finds exactly the inconsistencies planted in a database and bucket of its own."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from depot_common.db import create_pool, migrate
from depot_common.s3 import ensure_bucket, s3_client
from depot_devstack import servers
from depot_indexer.bootstrap import MIGRATIONS as SEARCH_MIGRATIONS
from depot_reconciler.bootstrap import MIGRATIONS as RECONCILE_MIGRATIONS
from depot_reconciler.plan import PlanResult, RunInProgress, make_plan, run_lock
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.bootstrap import MIGRATIONS as UPLOAD_MIGRATIONS

DAY = 24 * 3600


@dataclass
class World:
    """A fresh database (upload, search and reconcile schemas) and a fresh bucket."""

    database_url: str
    bucket: str
    pool: asyncpg.Pool
    s3: Any
    make_settings: Callable[..., ReconcilerSettings]

    def settings(self, **overrides: Any) -> ReconcilerSettings:
        url, bucket = self.database_url, self.bucket
        return self.make_settings(ReconcilerSettings, database_url=url, s3_bucket=bucket, **overrides)

    async def put_object(self, key: str, body: bytes = b"0123456789") -> None:
        await self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    async def document(
        self, status: str, *, size: int | None = 10, age: int = DAY, version: int = 1, key: str | None = None
    ) -> uuid.UUID:
        """Insert a document row last changed ``age`` seconds ago."""
        document_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO upload.documents (id, owner_id, filename, content_type, object_key, size_bytes, sha256,"
            " status, version, created_at, updated_at)"
            " VALUES ($1, 'alice', 'a.txt', 'text/plain', $2, $3, $4, $5, $6,"
            "         now() - make_interval(secs => $7), now() - make_interval(secs => $7))",
            document_id,
            key or f"documents/{document_id}",
            size,
            secrets.token_hex(32),
            status,
            version,
            float(age),
        )
        return document_id

    async def stored(self, *, indexed: bool = True) -> uuid.UUID:
        """A consistent stored document: row, object of its size, and (by default) its index entry."""
        document_id = await self.document("stored")
        await self.put_object(f"documents/{document_id}")
        if indexed:
            await self.index_entry(document_id)
        return document_id

    async def index_entry(self, document_id: uuid.UUID, *, version: int = 1, status: str = "indexed") -> None:
        await self.pool.execute(
            "INSERT INTO search.index_entries (document_id, owner_id, filename, version, status, indexed_at)"
            " VALUES ($1, 'alice', 'a.txt', $2, $3, now() - interval '1 day')",
            document_id,
            version,
            status,
        )

    async def outbox_event(self, *, age: int) -> uuid.UUID:
        """An unpublished event written ``age`` seconds ago (a published one is no longer in the outbox)."""
        event_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO upload.outbox (event_id, topic, key, value, created_at)"
            " VALUES ($1, 'depot.documents.v1', 'k', '{}'::json, now() - make_interval(secs => $2))",
            event_id,
            float(age),
        )
        return event_id

    async def consistent_baseline(self) -> None:
        """Rows and objects that agree: no check may report any of them."""
        await self.stored()
        await self.stored()
        await self.document("pending", size=None, age=60)  # an upload in flight, no object yet
        in_flight = await self.document("pending", size=None, age=60)
        await self.put_object(f"documents/{in_flight}")  # bytes written, TX2 not yet committed
        deleted = await self.document("deleted")
        await self.index_entry(deleted, version=2, status="removed")
        await self.document("failed")
        await self.outbox_event(age=1)  # within the allowance


@contextlib.asynccontextmanager
async def reconcile_world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    """Create a database and a bucket of the test's own; drop the database afterwards."""
    name = f"depot_rec_{secrets.token_hex(4)}"
    url = await asyncio.to_thread(servers.recreate_database, postgres_admin_url, name)
    bucket = f"depot-rec-{secrets.token_hex(4)}"
    pool = await create_pool(url, max_size=6)
    try:
        await migrate(pool, "upload", UPLOAD_MIGRATIONS)
        await migrate(pool, "search", SEARCH_MIGRATIONS)
        await migrate(pool, "reconcile", RECONCILE_MIGRATIONS)
        settings = make_settings(ReconcilerSettings, database_url=url, s3_bucket=bucket)
        async with s3_client(settings) as s3:
            await ensure_bucket(s3, bucket)
            yield World(url, bucket, pool, s3, make_settings)
    finally:
        await pool.close()
        await asyncio.to_thread(servers.drop_database, postgres_admin_url, name)


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


async def plan(world: World, settings: ReconcilerSettings, checks: list[str] | None = None) -> PlanResult:
    async with run_lock(world.pool) as conn:
        return await make_plan(conn, world.pool, world.s3, settings, checks=checks)


async def stored_findings(world: World, run_id: uuid.UUID) -> set[tuple[str, str]]:
    rows = await world.pool.fetch("SELECT class, subject FROM reconcile.findings WHERE run_id = $1", run_id)
    return {(row["class"], row["subject"]) for row in rows}


async def plant_one_of_each(world: World) -> set[tuple[str, str]]:
    """One inconsistency of every class; return the (class, subject) each must produce."""
    orphan_key = f"documents/{uuid.uuid4()}"
    await world.put_object(orphan_key)
    missing = await world.document("stored")
    await world.index_entry(missing)
    resized = await world.document("stored", size=11)
    await world.put_object(f"documents/{resized}")
    await world.index_entry(resized)
    stale = await world.document("pending", size=None, age=2 * DAY)
    unindexed = await world.document("stored", version=3)
    await world.put_object(f"documents/{unindexed}")
    await world.index_entry(unindexed, version=2)
    ghost = await world.document("deleted")
    await world.index_entry(ghost)
    stuck = await world.outbox_event(age=3600)
    abandoned_key = f"documents/{uuid.uuid4()}"  # a multipart upload no session claims (moto dates it 2010)
    abandoned = await world.s3.create_multipart_upload(Bucket=world.bucket, Key=abandoned_key)
    return {
        ("orphan_object", orphan_key),
        ("missing_blob", str(missing)),
        ("missing_blob", str(resized)),
        ("stale_upload", str(stale)),
        ("unindexed", str(unindexed)),
        ("ghost_index_entry", str(ghost)),
        ("stuck_outbox", str(stuck)),
        ("abandoned_multipart", f"{abandoned_key}?uploadId={abandoned['UploadId']}"),
    }


async def test_a_consistent_world_has_zero_findings(world: World) -> None:
    """Stored, pending, deleted and failed documents that agree with S3, the index and the outbox yield no finding."""
    await world.consistent_baseline()
    result = await plan(world, world.settings(reconcile_grace=0))
    assert result.total == 0, result.findings
    assert result.scanned["objects"] == 3
    assert result.scanned["documents"] == 6
    run = await world.pool.fetchrow(
        "SELECT status, counts, finished_at FROM reconcile.runs WHERE id = $1", result.run_id
    )
    assert run is not None
    assert run["status"] == "planned"
    assert run["finished_at"] is not None
    assert run["counts"]["findings"] == dict.fromkeys(result.checks, 0)


async def test_one_planted_inconsistency_of_each_class_gives_exactly_those_findings(world: World) -> None:
    """Each planted inconsistency is found once, under its class, and nothing else is, and the plan is persisted."""
    await world.consistent_baseline()
    expected = await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0))
    assert await stored_findings(world, result.run_id) == expected
    assert result.findings == {
        "orphan_object": 1,
        "missing_blob": 2,
        "stale_upload": 1,
        "unindexed": 1,
        "ghost_index_entry": 1,
        "stuck_outbox": 1,
        "abandoned_multipart": 1,
    }


async def test_an_object_younger_than_the_grace_is_not_a_finding(world: World) -> None:
    """A fresh object with no document is not an orphan while the grace period lasts, and is one after it."""
    await world.put_object(f"documents/{uuid.uuid4()}")
    assert (await plan(world, world.settings(reconcile_grace=3600))).total == 0
    assert (await plan(world, world.settings(reconcile_grace=0))).findings["orphan_object"] == 1


async def test_only_the_requested_checks_run(world: World) -> None:
    """With checks named, the run reports only those classes."""
    await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0), checks=["stale_upload", "ghost_index_entry"])
    assert result.findings == {"stale_upload": 1, "ghost_index_entry": 1}
    assert {check for check, _ in await stored_findings(world, result.run_id)} == {"stale_upload", "ghost_index_entry"}


async def test_the_merge_pages_through_more_than_one_page(world: World) -> None:
    """With pages smaller than the data, the keyset pages and the listing pages still pair every key."""
    await world.consistent_baseline()
    expected = await plant_one_of_each(world)
    result = await plan(world, world.settings(reconcile_grace=0, page_size=2))
    assert await stored_findings(world, result.run_id) == expected


async def test_only_one_run_holds_the_run_lock_at_a_time(world: World) -> None:
    """Only one run at a time: a run started while another holds the lock is refused."""
    async with run_lock(world.pool):
        with pytest.raises(RunInProgress):
            async with run_lock(world.pool):
                pass
    async with run_lock(world.pool):
        pass
