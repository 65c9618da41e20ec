"""A world to crash Depot's processes in, and the recovery SPEC §8 promises after any crash.

:func:`crash_world` gives a test its own database (upload, search and reconcile schemas),
bucket and broker, and the ``DEPOT_*`` environment a Depot process of that world runs with
(upload TTL :data:`TTL` seconds, reconcile grace 0, so a crashed upload is stale within
seconds). :func:`recover` then does what an operator's recovery does: ``depot-reconciler run
--apply``, the owners' workers (both relays, upload-api's compensation worker, the indexer)
until the pipeline has drained, and returns the invariants 1-7 measured by
:mod:`tests.invariants`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depot_common.lifecycle import background_task
from depot_devstack import servers
from depot_indexer.bootstrap import indexer_consumer
from depot_indexer.settings import IndexerSettings
from depot_reconciler import cli
from depot_reconciler.bootstrap import run_relay as reconciler_relay
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.bootstrap import compensation_consumer
from depot_upload.bootstrap import run_relay as upload_relay
from depot_upload.settings import UploadSettings
from tests.conftest import patched_environ
from tests.integration.test_reconciler_plan import World, reconcile_world
from tests.invariants import InvariantReport, measure_invariants

#: Seconds an upload may stay pending in a crash world (upload-api, its workers and the reconciler agree).
TTL = 3
ALL = frozenset({1, 2, 3, 4, 5, 6, 7})


@dataclass
class CrashWorld:
    world: World
    env: dict[str, str]
    """``DEPOT_*`` of this world: its database, bucket and broker, the TTL, grace 0."""
    make_settings: Callable[..., Any]

    def settings(self, cls: type[Any], **overrides: Any) -> Any:
        world = {
            "database_url": self.env["DEPOT_DATABASE_URL"],
            "s3_bucket": self.env["DEPOT_S3_BUCKET"],
            "kafka_bootstrap": self.env["DEPOT_KAFKA_BOOTSTRAP"],
            "upload_ttl": TTL,
            "reconcile_grace": 0,
        }
        return self.make_settings(cls, **{**world, **overrides})

    def reconciler_settings(self) -> ReconcilerSettings:
        settings: ReconcilerSettings = self.settings(ReconcilerSettings, relay_poll_interval=1)
        return settings

    def upload_settings(self, **overrides: Any) -> UploadSettings:
        settings: UploadSettings = self.settings(
            UploadSettings, compensations_group="crash-upload", consumer_session_timeout=2, **overrides
        )
        return settings

    async def in_progress(self) -> set[tuple[str, str]]:
        """``(key, upload id)`` of every in-progress multipart upload under ``documents/``."""
        listed = await self.world.s3.list_multipart_uploads(Bucket=self.world.bucket, Prefix="documents/")
        return {(upload["Key"], upload["UploadId"]) for upload in listed.get("Uploads", [])}


@contextlib.asynccontextmanager
async def crash_world(
    postgres_admin_url: str, make_settings: Callable[..., Any], stack_env: dict[str, str], log_dir: Path
) -> AsyncIterator[CrashWorld]:
    """A database, bucket and broker of the test's own; dropped and stopped afterwards."""
    async with reconcile_world(postgres_admin_url, make_settings) as world:
        broker, bootstrap = servers.start_tansu(log_dir)
        try:
            env = {
                **stack_env,
                "DEPOT_DATABASE_URL": world.database_url,
                "DEPOT_S3_BUCKET": world.bucket,
                "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
                "DEPOT_UPLOAD_TTL": str(TTL),
                "DEPOT_RECONCILE_GRACE": "0",
            }
            yield CrashWorld(world, env, make_settings)
        finally:
            broker.stop()


async def reconcile(crashed: CrashWorld, *argv: str) -> int:
    """``depot-reconciler run`` over the crash world; its exit code."""
    with patched_environ(crashed.env):
        return await asyncio.to_thread(cli.main, ["run", *argv])


async def recover(
    crashed: CrashWorld, *, acknowledged: Mapping[str, str] | None = None, settle: float = 60
) -> InvariantReport:
    """Once every upload of the crash is past TTL + grace: reconcile ``--apply``, run the owners' workers until
    the pipeline drains (invariants 1-5 hold, or ``settle`` seconds), then measure invariants 1-7."""
    world = crashed.world
    oldest = await world.pool.fetchval("SELECT min(created_at) FROM upload.documents WHERE status = 'pending'")
    if oldest is not None:
        age = await world.pool.fetchval("SELECT extract(epoch FROM now() - $1::timestamptz)::float8", oldest)
        await asyncio.sleep(max(0.0, TTL + 1 - age))
    await asyncio.sleep(1)  # S3's multipart "Initiated" has a one-second resolution
    assert await reconcile(crashed, "--apply", "--force") in (cli.EXIT_CONSISTENT, cli.EXIT_FINDINGS)
    settings = crashed.reconciler_settings()
    upload_settings = crashed.upload_settings()
    indexer_settings: IndexerSettings = crashed.settings(
        IndexerSettings, consumer_group="crash-indexer", consumer_session_timeout=2
    )
    drained = frozenset({1, 2, 3, 4, 5})
    async with (
        background_task(reconciler_relay(settings)),
        background_task(upload_relay(upload_settings)),
        compensation_consumer(upload_settings) as (compensations, _),
        background_task(compensations.run()),
        indexer_consumer(indexer_settings) as indexer,
        background_task(indexer.run()),
    ):
        deadline = time.monotonic() + settle
        while True:
            report = await measure_invariants(
                world.pool, world.s3, settings, acknowledged=acknowledged, invariants=drained
            )
            unpublished = await world.pool.fetchval(
                "SELECT (SELECT count(*) FROM upload.outbox) + (SELECT count(*) FROM reconcile.outbox)"
            )
            if (not report.violations and unpublished == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    return await measure_invariants(world.pool, world.s3, settings, acknowledged=acknowledged, invariants=ALL)
