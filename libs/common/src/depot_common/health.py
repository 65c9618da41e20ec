"""Readiness checks shared by every service: PostgreSQL, S3 and Kafka reachable."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import Request

from depot_common import kafka
from depot_common.settings import DepotSettings
from depot_common.web import ReadinessCheck


def dependency_checks(settings: DepotSettings) -> Callable[[Request], Mapping[str, ReadinessCheck]]:
    """Checks over ``app.state.pool`` (asyncpg), ``app.state.s3`` and the Kafka bootstrap."""

    def checks(request: Request) -> Mapping[str, ReadinessCheck]:
        state = request.app.state

        async def postgres() -> bool:
            return bool(await state.pool.fetchval("SELECT true"))

        async def s3() -> bool:
            await state.s3.head_bucket(Bucket=settings.s3_bucket)
            return True

        async def broker() -> bool:
            return await kafka.reachable(settings.kafka_servers)

        return {"postgres": postgres, "s3": s3, "kafka": broker}

    return checks
