"""Readiness checks shared by every service: PostgreSQL, S3 and the broker answer a real request.

Each check is one round trip bounded by :data:`CHECK_TIMEOUT` seconds: ``SELECT 1`` on the
pool, ``HeadBucket`` on the bucket, a Metadata request to the broker. A worker adds what it
knows itself (:class:`WorkerReadiness`): it is not ready before its work started, nor while
it waits out a dependency, whose check then reads false even if the probe itself got through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from fastapi import Request

from depot_common import kafka
from depot_common.errors import Dependency
from depot_common.settings import DepotSettings
from depot_common.web import ReadinessCheck

CHECK_TIMEOUT = 2.0

#: The /readyz check that speaks for each dependency.
CHECK_NAMES: Mapping[Dependency, str] = {"postgresql": "postgres", "s3": "s3", "kafka": "kafka"}


class Worker(Protocol):
    """What a worker tells readiness: whether it is running, and which dependencies it is waiting out."""

    @property
    def running(self) -> bool: ...

    def waiting_for(self) -> frozenset[Dependency]: ...


class WorkerReadiness:
    """A worker process's own part of ``/readyz`` (not ready until :meth:`attach` was given its worker)."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def attach(self, worker: Worker) -> None:
        self.worker = worker

    def running(self) -> bool:
        return self.worker is not None and self.worker.running

    def waiting_for(self) -> frozenset[Dependency]:
        return self.worker.waiting_for() if self.worker is not None else frozenset()


def dependency_checks(
    settings: DepotSettings, worker: WorkerReadiness | None = None
) -> Callable[[Request], Mapping[str, ReadinessCheck]]:
    """Checks over ``app.state.pool`` (asyncpg), ``app.state.s3`` and the broker, plus ``worker`` if given."""

    def checks(request: Request) -> Mapping[str, ReadinessCheck]:
        state = request.app.state

        async def postgres() -> bool:
            async with asyncio.timeout(CHECK_TIMEOUT):
                return bool(await state.pool.fetchval("SELECT 1"))

        async def s3() -> bool:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await state.s3.head_bucket(Bucket=settings.s3_bucket)
            return True

        async def broker() -> bool:
            return await kafka.answers(settings.kafka_servers, CHECK_TIMEOUT)

        probes: dict[str, ReadinessCheck] = {"postgres": postgres, "s3": s3, "kafka": broker}
        if worker is None:
            return probes
        waiting = {CHECK_NAMES[dependency] for dependency in worker.waiting_for()}

        def gated(name: str, probe: ReadinessCheck) -> ReadinessCheck:
            async def check() -> bool:
                return name not in waiting and await probe()

            return check

        async def working() -> bool:
            return worker.running()

        return {**{name: gated(name, probe) for name, probe in probes.items()}, "worker": working}

    return checks
