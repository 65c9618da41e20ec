"""The local servers make dev and the fixtures start, where the environment gives none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from depot_devstack import servers


@pytest.mark.skipif(
    servers.postgres_bin("initdb") is None, reason="no local PostgreSQL server binaries to make a private cluster"
)
async def test_a_private_postgres_cluster_serves_and_is_removed(tmp_path: Path) -> None:
    """Without a server on :5432, make dev makes a private cluster from the local binaries; stopping it
    ends the server and removes its scratch data."""
    process, url = await asyncio.to_thread(servers.start_private_postgres, tmp_path / "pgdata", tmp_path)
    try:
        database = await asyncio.to_thread(servers.recreate_database, url, "depot_private")
        conn = await asyncpg.connect(database)
        assert await conn.fetchval("SELECT current_database()") == "depot_private"
        await conn.close()
    finally:
        await asyncio.to_thread(process.stop)
    assert not process.alive()
    assert process.scratch is None or not process.scratch.exists()
