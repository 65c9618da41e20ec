"""The local servers make dev and the fixtures start, where the environment gives none."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from depot_devstack import servers
from depot_devstack.__main__ import SERVICES, DevStack


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


def test_make_dev_stops_its_services_at_once_not_one_after_another(tmp_path: Path) -> None:
    """Services that each take 2 s to drain after SIGTERM stop together: Ctrl-C (or the browser tests' teardown)
    waits about the slowest one, not the sum, and every process is gone afterwards."""
    slow = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: (time.sleep(2), sys.exit(0)))\n"
    slow += "print('ready', flush=True); time.sleep(60)"
    stack = DevStack(tmp_path, quiet=True)
    for name, _ in SERVICES[:4]:
        process = servers.spawn(name, [sys.executable, "-c", slow], log_path=tmp_path / f"{name}.log")
        stack.processes.append(process)
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{name}.log").read_text().strip() == "ready" for name, _ in SERVICES[:4]):
        assert time.monotonic() < deadline, "the stand-in services never started"
        time.sleep(0.05)
    started = time.monotonic()
    stack.stop()
    took = time.monotonic() - started
    assert not any(process.alive() for process in stack.processes)
    assert took < 6, f"stopping four 2 s drains took {took:.1f} s: one after another"
