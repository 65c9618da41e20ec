"""``depot-reconciler serve``: the ops HTTP API and the scheduled runs, in one process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from fastapi import FastAPI

from depot_common.health import dependency_checks
from depot_common.lifecycle import background_task
from depot_common.resources import service_resources
from depot_common.web import create_app
from depot_reconciler.api import router
from depot_reconciler.bootstrap import MIGRATIONS, SCHEMA
from depot_reconciler.runner import Reconciler
from depot_reconciler.settings import ReconcilerSettings

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
