"""Ops endpoints for worker processes (outbox relay, consumers): ``/healthz``, ``/readyz``, ``/metrics``.

A worker has no API of its own, but operators still need to probe it and scrape its
metrics (relay backlog, consumer lag). ``DEPOT_OPS_PORT`` (0 = off) serves the same three
routes every HTTP service has, from the worker's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI

from depot_common.db import create_pool
from depot_common.health import dependency_checks
from depot_common.s3 import s3_client
from depot_common.settings import DepotSettings
from depot_common.web import create_app


class _WorkerServer(uvicorn.Server):
    """uvicorn without its signal handlers: the worker owns SIGINT/SIGTERM and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_app(settings: DepotSettings, *, title: str) -> FastAPI:
    """An app with only the health, readiness and metrics routes."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        pool = await create_pool(settings.database_url, min_size=1, max_size=1)
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
        readiness=dependency_checks(settings),
        allowed_origins=[],
    )


@contextlib.asynccontextmanager
async def ops_endpoints(settings: DepotSettings, *, port: int, host: str, title: str) -> AsyncIterator[None]:
    """Serve the ops routes on ``host:port`` for the block (nothing when ``port`` is 0)."""
    if not port:
        yield
        return
    config = uvicorn.Config(ops_app(settings, title=title), host=host, port=port, log_config=None, access_log=False)
    server = _WorkerServer(config)
    task = asyncio.ensure_future(server.serve())
    try:
        yield
    finally:
        server.should_exit = True  # a graceful stop: uvicorn closes its lifespan itself
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            task.cancel()
