"""The reconciler's one wiring place: settings → pool, S3 client and migrations → the processes.

``build_app`` is ``depot-reconciler serve`` (the ops HTTP API and the scheduled runs);
``run_relay`` is ``depot-reconciler relay`` (publish ``reconcile.outbox`` to
``depot.compensations.v1``); ``run_resources`` is what a ``depot-reconciler run`` works
with. :mod:`depot_reconciler.cli` parses the command line and calls these.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI

from depot_common.db import create_pool, migrate
from depot_common.events import COMPENSATIONS_TOPIC
from depot_common.health import dependency_checks
from depot_common.lifecycle import background_task
from depot_common.relay_process import run_outbox_relay
from depot_common.resources import service_resources
from depot_common.s3 import s3_client
from depot_common.web import create_app
from depot_reconciler.endpoints import router
from depot_reconciler.repository import MIGRATIONS, SCHEMA
from depot_reconciler.runner import Reconciler
from depot_reconciler.settings import ReconcilerSettings

__all__ = ["MIGRATIONS", "SCHEMA", "build_app", "run_relay", "run_resources"]

log = structlog.get_logger(__name__)


def build_app(settings: ReconcilerSettings) -> FastAPI:
    """The reconciler API; with ``DEPOT_RECONCILE_INTERVAL`` > 0 it also runs on a schedule."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        resources = service_resources(app, settings, schema=SCHEMA, migrations=MIGRATIONS, pool_size=8)
        async with resources as (pool, s3):
            reconciler = Reconciler(pool, s3, settings)
            app.state.reconciler = reconciler
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if settings.reconcile_interval > 0:
                        await stack.enter_async_context(
                            background_task(reconciler.schedule(settings.reconcile_interval))
                        )
                    log.info(
                        "reconciler.started",
                        interval=settings.reconcile_interval,
                        schedule_apply=settings.reconcile_schedule_apply,
                    )
                    yield {}
            finally:
                await reconciler.close()

    app = create_app(
        title="Depot reconciler",
        description="Reconcile runs: find drift between PostgreSQL, S3 and the index; apply reviewed plans.",
        lifespan=lifespan,
        readiness=dependency_checks(settings),
        allowed_origins=settings.allowed_origins,
    )
    app.include_router(router)
    return app


async def run_relay(settings: ReconcilerSettings) -> None:
    """Publish the ``reconcile`` outbox to ``depot.compensations.v1`` until SIGINT/SIGTERM."""
    await run_outbox_relay(
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        topic=COMPENSATIONS_TOPIC,
        partitions=settings.compensations_partitions,
        title="Depot reconcile outbox relay",
    )


@contextlib.asynccontextmanager
async def run_resources(settings: ReconcilerSettings) -> AsyncIterator[tuple[asyncpg.Pool, Any]]:
    """A migrated pool and an S3 client for one ``depot-reconciler run``; closed on exit."""
    pool = await create_pool(settings.database_url, min_size=1, max_size=4, timeout=10)
    try:
        await migrate(pool, SCHEMA, MIGRATIONS)
        async with s3_client(settings) as s3:
            yield pool, s3
    finally:
        await pool.close()
