"""A consumer worker killed with SIGKILL: how long until it is back at work.

The indexer's consumer (``depot_indexer consume``, group ``indexer``) runs on a database of
its own. Each sample kills it (SIGKILL, as the OOM killer or a node loss would), starts it
again with the same settings, and times from that start to

- ``ready``: its ops server's ``/readyz`` answers 200;
- ``working``: an event produced right after the kill (a ``document.deleted`` of a
  document the index does not hold, a no-op) is in the consumer's processed-event inbox —
  the group has given the new process its partitions again.

Two memberships, the same run: **dynamic** (no ``DEPOT_REPLICA_ID``, a 10 s session: the
settings before issue 8 item 6) against **static** (``group_instance_id`` from
``DEPOT_REPLICA_ID``, a 6 s session: the defaults now). With dynamic membership the
broker waits for the dead member's session to expire and rebalances; a static member that
is back within its session takes its partitions back (Apache Kafka; tansu's behaviour is
what is measured here).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg
import httpx

from benchmarks.report import Check, Result, table
from benchmarks.stack import Stack
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentDeleted, encode
from depot_common.kafka import make_producer
from depot_devstack import servers

NAME = "restart"
PATIENCE = 90.0
MODES: dict[str, dict[str, str]] = {
    "dynamic, 10 s session": {"consumer_session_timeout": "10"},
    "static, 6 s session": {"consumer_session_timeout": "6", "replica_id": "bench-indexer-0"},
}


def deleted() -> CloudEvent[DocumentDeleted]:
    document_id = uuid.uuid4()
    data = DocumentDeleted(document_id=document_id, owner_id="bench-restart", version=3)
    return CloudEvent[DocumentDeleted](source="bench", type="document.deleted", subject=str(document_id), data=data)


async def _until(probe: Any, what: str) -> float:
    """Seconds until ``await probe()`` is true."""
    started = time.perf_counter()
    while not await probe():
        if time.perf_counter() - started > PATIENCE:
            raise servers.StackError(f"the indexer was not {what} within {PATIENCE:.0f} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def _sample(
    stack: Stack, database_url: str, settings: dict[str, str], producer: Any, pool: Any
) -> dict[str, float]:
    """Start the consumer, see it work once, kill it, start it again: the restart's timings."""
    port = servers.free_port()
    group = f"bench-restart-{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"ops_port": str(port), "consumer_group": group, **settings}
    async with httpx.AsyncClient(timeout=2) as http:

        async def ready() -> bool:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        async def working(event_id: uuid.UUID) -> bool:
            try:
                return bool(await pool.fetchval("SELECT 1 FROM search.processed_events WHERE event_id = $1", event_id))
            except asyncpg.UndefinedTableError:  # not migrated yet
                return False

        async with stack.service(
            "indexer", ["-m", "depot_indexer", "consume"], database_url=database_url, **overrides
        ) as first:
            event = deleted()
            await producer.send_and_wait(DOCUMENTS_TOPIC, value=encode(event), key=str(event.subject).encode())
            await _until(lambda: working(event.id), "working at first start")
            first.process.popen.kill()  # SIGKILL: no leave-group, no commit
            await asyncio.to_thread(first.process.popen.wait)
        event = deleted()
        await producer.send_and_wait(DOCUMENTS_TOPIC, value=encode(event), key=str(event.subject).encode())
        started = time.perf_counter()
        async with stack.service(
            "indexer", ["-m", "depot_indexer", "consume"], database_url=database_url, **overrides
        ) as again:
            again.check_alive()
            to_ready = await _until(ready, "ready")
            await _until(lambda: working(event.id), "working again")
            to_work = time.perf_counter() - started
    return {"ready_s": to_ready, "working_s": to_work}


async def run(stack: Stack, *, quick: bool) -> Result:
    samples = 1 if quick else 3
    measured: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    async with stack.s3():  # the bucket the readiness check asks for
        pass
    producer = make_producer([stack.kafka_bootstrap])
    await producer.start()
    try:
        for _ in range(samples):
            for mode, settings in MODES.items():
                async with stack.database() as database_url:  # and a group of its own: each sample starts alike
                    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
                    try:
                        measured[mode].append(await _sample(stack, database_url, settings, producer, pool))
                    finally:
                        await pool.close()
    finally:
        await producer.stop()
    return _report(measured)


def _report(measured: dict[str, list[dict[str, float]]]) -> Result:
    result = Result(NAME)
    shown = table("indexer SIGKILL → back (s, median)", ["membership", "samples", "/readyz 200", "consuming again"])
    for mode, samples in measured.items():
        ready = statistics.median(s["ready_s"] for s in samples)
        working = statistics.median(s["working_s"] for s in samples)
        result.figures[mode] = {
            "samples": samples,
            "median_ready_s": round(ready, 2),
            "median_working_s": round(working, 2),
        }
        shown.add_row(mode, str(len(samples)), f"{ready:.2f}", f"{working:.2f}")
    result.tables.append(shown)
    dynamic = result.figures["dynamic, 10 s session"]["median_working_s"]
    static = result.figures["static, 6 s session"]["median_working_s"]
    result.checks.append(
        Check("static / dynamic time back at work", static / dynamic if dynamic else 0.0, 1.0, higher_is_better=False)
    )
    return result
