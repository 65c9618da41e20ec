"""What every HTTP service holds for its lifetime: a migrated pool, an S3 client, a token verifier."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI

from depot_common.auth import TokenVerifier
from depot_common.db import MigrationSource, create_pool, migrate
from depot_common.s3 import s3_client
from depot_common.settings import DepotSettings


@contextlib.asynccontextmanager
async def service_resources(
    app: FastAPI,
    settings: DepotSettings,
    *,
    schema: str,
    migrations: MigrationSource,
    pool_size: int,
    **pool_options: Any,
) -> AsyncIterator[tuple[asyncpg.Pool, Any]]:
    """Open them, migrate ``schema``, publish them on ``app.state`` (readiness and auth read them
    there), yield ``(pool, s3)``, and close them at the end. ``pool_options`` go to asyncpg's pool."""
    pool = await create_pool(settings.database_url, max_size=pool_size, **pool_options)
    try:
        await migrate(pool, schema, migrations)
        async with s3_client(settings) as s3:
            app.state.pool, app.state.s3 = pool, s3
            app.state.token_verifier = TokenVerifier.from_settings(settings)
            yield pool, s3
    finally:
        await pool.close()
