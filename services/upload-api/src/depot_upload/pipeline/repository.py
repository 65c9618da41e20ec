"""PostgreSQL adapter of the pipeline report: outbox backlogs, read with ``depot_common.outbox.backlog``."""

from __future__ import annotations

import asyncpg

from depot_common.outbox import backlog
from depot_upload.pipeline.ports import Backlog


class PostgresOutboxes:
    """Reads any schema's outbox (the upload API's role needs ``SELECT`` on the others' outboxes)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def backlog(self, schema: str) -> Backlog | None:
        try:
            async with self._pool.acquire() as conn:
                count, age = await backlog(conn, schema)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
        return Backlog(count=count, oldest_age_s=round(age, 3))
