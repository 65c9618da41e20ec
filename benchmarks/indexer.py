"""Indexer throughput: ``document.stored`` events indexed per second by a ``depot-indexer consume`` process.

``events`` small text documents (about 1 KiB of English each) are written to S3, and a
``depot-indexer consume`` process (the service's own command, on a fresh database, a fresh
consumer group started at the end of ``depot.documents.v1``) is warmed up with a few of
their events. Then all the others are published at once to ``depot.documents.v1`` (the
relay's way: batches of 500, acks=all; far faster than indexing) and timed from the first
send until ``search.index_entries`` holds every one of them (polled every 20 ms).

For reference, in the same run: the indexer's own S3 read (``S3BlobReader.read``, the same
client configuration) of the same objects, one at a time, as the consumer does them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from rich.table import Table

from benchmarks.events import Message, document_stored, move_group_to_end, outbox_headers, produce, text_document
from benchmarks.load import Batch, timed
from benchmarks.procfs import thread_cpu_seconds
from benchmarks.report import Result, table
from benchmarks.stack import Service, Stack
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent
from depot_common.kafka import ensure_topics, make_producer
from depot_common.s3 import object_store
from depot_indexer.settings import IndexerSettings
from depot_indexer.storage import S3BlobReader

NAME = "indexer"
PARTITIONS = int(IndexerSettings.model_fields["documents_partitions"].default)
MAX_OBJECT_BYTES = int(IndexerSettings.model_fields["index_max_object_bytes"].default)
PUT_CONCURRENCY = 16
INDEXER = ["-m", "depot_indexer", "consume"]


@dataclass(frozen=True)
class Plan:
    events: int
    s3_reads: int
    warmup: int = 20


def plan(quick: bool) -> Plan:
    return Plan(events=200, s3_reads=100) if quick else Plan(events=3000, s3_reads=300)


async def put_objects(s3: Any, bucket: str, objects: list[tuple[str, bytes]]) -> None:
    """Write ``(key, bytes)`` objects, ``PUT_CONCURRENCY`` at a time."""
    limit = asyncio.Semaphore(PUT_CONCURRENCY)

    async def put(key: str, data: bytes) -> None:
        async with limit:
            await s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="text/plain")

    await asyncio.gather(*(put(key, data) for key, data in objects))


async def indexed_count(conn: asyncpg.Connection) -> int:
    """Rows in ``search.index_entries`` (0 until the indexer has created its schema)."""
    try:
        return int(await conn.fetchval("SELECT count(*) FROM search.index_entries WHERE status = 'indexed'"))
    except asyncpg.UndefinedTableError:
        return 0


async def wait_indexed(conn: asyncpg.Connection, count: int, indexer: Service, patience: float) -> None:
    """Poll until ``count`` entries are indexed; fail if the indexer dies or ``patience`` runs out."""
    deadline = time.monotonic() + patience
    while (found := await indexed_count(conn)) < count:
        indexer.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{found} of {count} documents indexed after {patience:.0f} s; see {indexer.process.log_path}"
            )
        await asyncio.sleep(0.02)


def documents(count: int) -> list[tuple[CloudEvent[Any], bytes]]:
    """``count`` text documents and the ``document.stored`` event of each."""
    result = []
    for number in range(count):
        content = text_document(number, f"word{secrets.token_hex(4)}")
        result.append((document_stored(filename=f"note-{number}.txt", content=content), content))
    return result


async def _s3_reads(stack: Stack, keys: list[str], pids: dict[str, int]) -> Batch:
    reader = S3BlobReader(object_store(stack.settings()))

    async def read_all() -> None:
        for key in keys:
            await reader.read(key, MAX_OBJECT_BYTES)

    return await timed(read_all(), events=len(keys), pids=pids)


async def run(stack: Stack, *, quick: bool) -> Result:
    steps = plan(quick)
    bootstrap = [stack.kafka_bootstrap]
    group = f"bench-indexer-{secrets.token_hex(4)}"
    await ensure_topics(bootstrap, {DOCUMENTS_TOPIC: PARTITIONS})
    skipped = await move_group_to_end(bootstrap, DOCUMENTS_TOPIC, group)
    docs = documents(steps.warmup + steps.events)
    messages = [Message.of(event, outbox_headers()) for event, _ in docs]
    warmup, measured = messages[: steps.warmup], messages[steps.warmup :]
    async with stack.database() as database_url, stack.s3() as s3:
        await put_objects(s3, stack.bucket, [(event.data.object_key, content) for event, content in docs])
        client_pids = {"client": os.getpid(), "s3": stack.s3_pid}
        keys = [event.data.object_key for event, _ in docs[: steps.s3_reads]]
        reads = await _s3_reads(stack, keys, client_pids)
        conn = await asyncpg.connect(database_url)
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            async with stack.service(
                "indexer", INDEXER, database_url=database_url, consumer_group=group, consumer_session_timeout="2"
            ) as indexer:
                await produce(producer, DOCUMENTS_TOPIC, warmup, 500)
                await wait_indexed(conn, len(warmup), indexer, patience=120)

                async def publish_and_index() -> None:
                    await produce(producer, DOCUMENTS_TOPIC, measured, 500)
                    await wait_indexed(conn, len(messages), indexer, patience=300)

                pids = {"indexer": indexer.pid, "s3": stack.s3_pid, "kafka": stack.kafka_pid, "client": os.getpid()}
                threads_before = thread_cpu_seconds(indexer.pid)
                indexed = await timed(publish_and_index(), events=len(measured), pids=pids, database_url=database_url)
                threads = {
                    name: used - threads_before.get(name, 0.0) for name, used in thread_cpu_seconds(indexer.pid).items()
                }
        finally:
            await producer.stop()
            with contextlib.suppress(Exception):
                await conn.close()
    return _report(indexed, reads, steps, skipped, _loop_and_others(threads, indexed.events))


def _loop_and_others(threads: dict[str, float], events: int) -> tuple[float, float]:
    """CPU ms per event of the indexer's event loop (the thread that runs Python: one core at most, whatever the
    machine) and of its other threads (obstore's tokio workers, asyncio's executor), read from /proc."""
    loop = threads.get("main", 0.0)
    return loop / events * 1000, (sum(threads.values()) - loop) / events * 1000


#: The processes one indexed event costs CPU in, and the cores of this machine.
CAPACITY_PROCESSES = ("indexer", "postgres", "s3", "kafka")
CORES = os.cpu_count() or 1


def capacities(indexed: Batch) -> dict[str, float]:
    """Events per second each process could sustain on a core of its own (1000 / its CPU ms per event), and
    what the whole machine could if those processes had all its cores (cores * 1000 / their sum): the
    ceiling the measured rate shares with whatever else runs."""
    per_event = {name: indexed.cpu_ms_per_event(name) for name in CAPACITY_PROCESSES}
    figures = {name: round(1000 / ms, 1) for name, ms in per_event.items() if ms > 0}
    figures["machine"] = round(CORES * 1000 / sum(per_event.values()), 1)
    return figures


def capacity_view(indexed: Batch, loop_and_others: tuple[float, float]) -> Table:
    """The capacity table: per process, its CPU per event, its share, and the rate it caps; the indexer's split
    into its event loop (what caps one process: it runs on one core) and its other threads."""
    view = table(
        f"Indexer capacity from CPU per event ({CORES} cores)",
        ["process", "cpu ms/event", "share", "events/s on one core"],
    )
    per_event = {name: indexed.cpu_ms_per_event(name) for name in CAPACITY_PROCESSES}
    total = sum(per_event.values())
    for name, ms in per_event.items():
        view.add_row(name, f"{ms:.2f}", f"{ms / total:.0%}", f"{1000 / ms:.0f}" if ms > 0 else "")
        if name == "indexer":
            for part, part_ms in zip(("  its event loop thread", "  its other threads"), loop_and_others, strict=True):
                view.add_row(
                    part, f"{part_ms:.2f}", f"{part_ms / total:.0%}", f"{1000 / part_ms:.0f}" if part_ms else ""
                )
    view.add_row(f"all four on {CORES} cores", f"{total:.2f}", "100%", f"{CORES * 1000 / total:.0f}")
    return view


def _report(indexed: Batch, reads: Batch, steps: Plan, skipped: int, loop_and_others: tuple[float, float]) -> Result:
    result = Result(NAME)
    view = table(
        f"Indexer throughput: {steps.events} document.stored events of ~1 KiB text objects, one consumer process",
        [
            "work",
            "events",
            "s",
            "events/s",
            "ms/event",
            "cpu ms/ev: indexer",
            "postgres",
            "s3",
            "kafka",
            "client",
            "cores: busy",
            "other",
        ],
    )
    view.add_row(
        "depot-indexer consume",
        str(indexed.events),
        f"{indexed.elapsed_s:.2f}",
        f"{indexed.per_s:.1f}",
        f"{1000 / indexed.per_s:.2f}",
        *(f"{indexed.cpu_ms_per_event(name):.2f}" for name in ("indexer", "postgres", "s3", "kafka", "client")),
        f"{indexed.busy_cores:.2f}",
        f"{indexed.other_cores:.2f}",
    )
    view.add_row(
        "its S3 read alone, one at a time",
        str(reads.events),
        f"{reads.elapsed_s:.2f}",
        f"{reads.per_s:.1f}",
        f"{1000 / reads.per_s:.2f}",
        "",
        "",
        f"{reads.cpu_ms_per_event('s3'):.2f}",
        "",
        f"{reads.cpu_ms_per_event('client'):.2f}",
        f"{reads.busy_cores:.2f}",
        f"{reads.other_cores:.2f}",
    )
    result.tables.append(view)
    capacity = capacity_view(indexed, loop_and_others)
    result.tables.append(capacity)
    result.figures = {
        "events": steps.events,
        "indexer": indexed.summary(),
        "s3_read_one_at_a_time": reads.summary(),
        "s3_read_share_of_event_time": round(reads.elapsed_s / reads.events / (indexed.elapsed_s / indexed.events), 3),
        "records_skipped_before_start": skipped,
        "capacity_events_per_s": capacities(indexed),
        "indexer_cpu_ms_per_event": {
            "event_loop_thread": round(loop_and_others[0], 3),
            "other_threads": round(loop_and_others[1], 3),
        },
    }
    result.notes.append(
        "timed from the first send of the batch until search.index_entries holds every document (polled every "
        "20 ms); warmed up first. CPU per event: indexer process, the database's PostgreSQL backends, moto (s3), "
        "tansu (kafka), this process (client: producing, polling); other = busy minus those (PostgreSQL's WAL "
        "writer, checkpointer…, anything else running). No target: see the pipeline benchmark for "
        "what the indexer must sustain. Capacity: the rate each process could sustain with a core to itself, and "
        "all four with every core to themselves (machine), from the CPU each spent per event. The indexer's event loop "
        "thread runs all its Python code: one process cannot go past the rate it caps, however many cores."
    )
    return result
