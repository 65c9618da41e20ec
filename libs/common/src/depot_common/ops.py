"""Ops endpoints for worker processes (outbox relay, consumers): ``/healthz``, ``/readyz``, ``/metrics``.

A worker has no API of its own, but operators still need to probe it and scrape its
metrics (relay backlog, consumer lag). ``DEPOT_OPS_PORT`` (0 = off) serves the same three
routes every HTTP service has, from the worker's own event loop. The server starts first,
needing no dependency to be up (a worker started during an outage is alive and observable,
just not ready); if it cannot start (port taken) the process exits non-zero at once, so its
supervisor restarts it instead of leaving it running unobservable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI

from depot_common.db import create_pool
from depot_common.health import WorkerReadiness, dependency_checks
from depot_common.s3 import s3_client
from depot_common.settings import DepotSettings
from depot_common.web import create_app

log = structlog.get_logger(__name__)


class _WorkerServer(uvicorn.Server):
    """uvicorn without its signal handlers: the worker owns SIGINT/SIGTERM and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_app(settings: DepotSettings, *, title: str, worker: WorkerReadiness | None = None) -> FastAPI:
    """An app with only the health, readiness and metrics routes (and ``worker``'s own readiness)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        pool = await create_pool(settings.database_url, min_size=0, max_size=1)  # connects on the first check
        try:
            async with s3_client(settings) as s3:
                app.state.pool, app.state.s3 = pool, s3
                yield {}
        finally:
            await pool.close()

    return create_app(
        title=title,
        description="Health, readiness and metrics of a worker process.",
        lifespan=lifespan,
        readiness=dependency_checks(settings, worker),
        allowed_origins=[],
    )


@contextlib.asynccontextmanager
async def ops_endpoints(
    settings: DepotSettings, *, port: int, host: str, title: str, worker: bool = False
) -> AsyncIterator[WorkerReadiness]:
    """Serve the ops routes on ``host:port`` for the block (nothing when ``port`` is 0). With ``worker``,
    ``/readyz`` also waits for the worker the block attaches to the yielded :class:`WorkerReadiness`."""
    readiness = WorkerReadiness()
    if not port:
        yield readiness
        return
    app = ops_app(settings, title=title, worker=readiness if worker else None)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    server = _WorkerServer(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                log.error("ops.start_failed", host=host, port=port)
                raise SystemExit(1)
            await asyncio.sleep(0.01)
        yield readiness
    finally:
        server.should_exit = True  # a graceful stop: uvicorn closes its lifespan itself
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            task.cancel()
