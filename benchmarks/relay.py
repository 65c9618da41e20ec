"""Outbox relay: throughput against producing the same records directly, and idle latency.

**Throughput.** ``rows`` realistic ``document.stored`` events (built with the upload API's
models, headers as ``enqueue`` writes them) are COPYed into an outbox in a scratch schema
of a fresh database — its DDL taken from the upload API's own migration, partial index
included — and ``depot_common.outbox.OutboxRelay`` runs *in this process* (one task, the
producer ``depot_common.kafka.make_producer`` builds, ``acks="all"``) from its start until
a poll (every 10 ms) finds no unpublished row. The baseline is the same records sent with
the same producer to the same broker the way the relay sends a batch — ``send`` each
record, then wait for every ack — minus the database: the ceiling of the relay. Each batch
size is measured baseline first, then relay, back to back.

**Idle latency.** A ``depot-upload relay`` *process* (the service's own command and
settings: batch 500, 1 s polling fallback, woken by ``LISTEN/NOTIFY``) publishes the
upload schema's outbox of a fresh database. One event at a time is written with
``depot_common.outbox.enqueue`` in a transaction (to a scratch topic), then a random pause
of 50 to 250 ms. Reported from the commit returning: until a consumer of the topic sees it
(``fetch_max_wait_ms=10``, so the figure is the relay's, not the consumer's long poll),
until a consumer configured as the services' (``make_consumer``: aiokafka's default
``fetch_max_wait_ms=500``) sees it. (The relay deletes a row once Kafka acked it: there is
no publication time in the table to read.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from benchmarks.events import Message, Observer, document_stored, outbox_headers, produce
from benchmarks.load import Batch, latency_summary, percentile, timed
from benchmarks.report import Check, Result, table
from benchmarks.stack import Service, Stack
from depot_common.db import advisory_key, init_connection
from depot_common.kafka import ensure_topics, make_producer
from depot_common.logging import configure_logging
from depot_common.outbox import OutboxRelay, enqueue, outbox_ddl
from depot_common.relay_producer import Headers, Record, RelayProducer, make_relay_producer
from depot_upload.settings import UploadSettings

NAME = "relay"
DEFAULT_BATCH = int(UploadSettings.model_fields["relay_batch_size"].default)
BATCH_SIZES = tuple(sorted({100, 500, 2000, DEFAULT_BATCH}))
PARTITIONS = 6  # as depot.documents.v1 (DEPOT_DOCUMENTS_PARTITIONS default)
TARGET_RATIO = 0.8
TARGET_EVENTS_PER_S = 50_000.0
TARGET_P50_MS = 50.0
SCHEMA = "relay_bench"
COLUMNS = ["event_id", "topic", "key", "value", "headers"]


@dataclass(frozen=True)
class Plan:
    rows: int
    samples: int
    warmup_samples: int = 5
    pause_s: tuple[float, float] = (0.05, 0.25)


def plan(quick: bool) -> Plan:
    return Plan(rows=10_000, samples=20) if quick else Plan(rows=100_000, samples=200)


Row = tuple[uuid.UUID, str, str, str, str]


def _rows(count: int, topic: str) -> tuple[list[Row], list[Message]]:
    """Outbox rows (as COPY takes them) and the same events as Kafka records."""
    rows: list[Row] = []
    messages: list[Message] = []
    for _ in range(count):
        event, headers = document_stored(), outbox_headers()
        message = Message.of(event, headers)
        rows.append((event.id, topic, event.subject, message.value.decode(), json.dumps(headers)))
        messages.append(message)
    return rows, messages


async def _fill(conn: asyncpg.Connection, rows: list[Row]) -> None:
    await conn.execute(f"TRUNCATE {SCHEMA}.outbox")
    await conn.copy_records_to_table("outbox", schema_name=SCHEMA, columns=COLUMNS, records=rows)
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.outbox")


async def produce_as_the_relay(
    producer: RelayProducer, topic: str, messages: Sequence[Message], batch_size: int
) -> None:
    """What the relay does per batch, without the database, with its producer: send a batch, await its acks."""
    for start in range(0, len(messages), batch_size):
        await producer.send([_record(topic, message) for message in messages[start : start + batch_size]])


def _record(topic: str, message: Message) -> Record:
    headers: Headers = dict(message.headers)
    return (topic, message.key, message.value, headers)


async def _drain_with_relay(
    conn: asyncpg.Connection,
    database_url: str,
    producer: RelayProducer,
    batch_size: int,
    pids: dict[str, int],
    rows: int,
) -> Batch:
    """Start an in-process relay and wait until every row is marked published."""
    relay = OutboxRelay(dsn=database_url, schema=SCHEMA, producer=producer, batch_size=batch_size)
    task: asyncio.Task[None] | None = None

    async def drain() -> None:
        nonlocal task
        task = asyncio.create_task(relay.run())
        query = f"SELECT EXISTS (SELECT FROM {SCHEMA}.outbox)"
        while await conn.fetchval(query):
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the relay stopped")
            await asyncio.sleep(0.01)

    try:
        return await timed(drain(), events=rows, pids=pids, database_url=database_url)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _throughput(stack: Stack, database_url: str, steps: Plan) -> tuple[dict[int, dict[str, Batch]], int]:
    topic = f"bench.relay.{secrets.token_hex(4)}"
    bootstrap = [stack.kafka_bootstrap]
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    rows, messages = _rows(steps.rows, topic)
    pids = {"client": os.getpid(), "kafka": stack.kafka_pid}
    conn = await asyncpg.connect(database_url)  # jsonb as text: what COPY takes
    aiokafka_producer = make_producer(bootstrap, linger_ms=0)  # the services' producer, for reference
    relay_producer = make_relay_producer(bootstrap)  # as `depot-upload relay` builds it
    await asyncio.gather(aiokafka_producer.start(), relay_producer.start())
    try:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        await conn.execute(outbox_ddl(SCHEMA))
        # warm-up: connections, metadata
        await produce(aiokafka_producer, topic, messages[:2000], DEFAULT_BATCH)
        await produce_as_the_relay(relay_producer, topic, messages[:2000], DEFAULT_BATCH)
        phases: dict[int, dict[str, Batch]] = {}
        for batch_size in BATCH_SIZES:
            reference = await timed(
                produce(aiokafka_producer, topic, messages, batch_size),
                events=len(messages),
                pids=pids,
                database_url=database_url,
            )
            raw = await timed(
                produce_as_the_relay(relay_producer, topic, messages, batch_size),
                events=len(messages),
                pids=pids,
                database_url=database_url,
            )
            await _fill(conn, rows)
            relayed = await _drain_with_relay(conn, database_url, relay_producer, batch_size, pids, len(rows))
            phases[batch_size] = {"aiokafka": reference, "raw": raw, "relay": relayed}
        await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    finally:
        await asyncio.gather(aiokafka_producer.stop(), relay_producer.stop())
        await conn.close()
    return phases, round(sum(len(message.value) for message in messages) / len(messages))


async def wait_active(conn: asyncpg.Connection, schema: str, relay: Service, patience: float = 60.0) -> None:
    """Wait until a relay holds ``schema``'s advisory lock (it has migrated, and listens right after)."""
    deadline = time.monotonic() + patience
    query = (
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1::bigint::oid"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
    while not await conn.fetchval(query, advisory_key(f"outbox-relay:{schema}")):
        relay.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay did not become active within {patience:.0f} s; see {relay.process.log_path}")
        await asyncio.sleep(0.05)


async def _latency(stack: Stack, database_url: str, relay: Service, steps: Plan) -> dict[str, list[float]]:
    topic = f"bench.latency.{secrets.token_hex(4)}"
    bootstrap = [stack.kafka_bootstrap]
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    conn = await asyncpg.connect(database_url)
    committed: dict[bytes, float] = {}  # key: perf_counter at commit
    try:
        await init_connection(conn)  # enqueue writes jsonb from Python objects
        await wait_active(conn, "upload", relay)
        async with (
            Observer.reading(bootstrap, topic, fetch_max_wait_ms=10) as fast,
            Observer.reading(bootstrap, topic) as default,
        ):

            async def one(patience: float) -> bytes:
                event = document_stored()
                async with conn.transaction():
                    await enqueue(conn, "upload", topic=topic, key=event.subject, event=event)
                key = event.subject.encode()
                committed[key] = time.perf_counter()
                try:
                    await fast.wait_for(key, patience)
                except TimeoutError:
                    relay.check_alive()
                    raise RuntimeError(f"event not on {topic} {patience} s after its commit") from None
                return key

            # warm-up: the relay process is up (it publishes what came before), consumers assigned
            for _ in range(steps.warmup_samples):
                await one(60.0)
            keys = []
            for _ in range(steps.samples):
                await asyncio.sleep(random.uniform(*steps.pause_s))  # noqa: S311 - not cryptography
                keys.append(await one(10.0))
            for key in keys:
                await default.wait_for(key, 10.0)
    finally:
        await conn.close()
    return {
        "consumer, fetch_max_wait 10 ms": [fast.seen[key] - committed[key] for key in keys],
        "consumer as the services' (fetch_max_wait 500 ms)": [default.seen[key] - committed[key] for key in keys],
    }


async def run(stack: Stack, *, quick: bool) -> Result:
    steps = plan(quick)
    configure_logging("json", "warning", service="bench")  # the in-process relay logs like the service
    result = Result(NAME)
    async with stack.database() as database_url:
        phases, payload = await _throughput(stack, database_url, steps)
        async with stack.service("outbox-relay", ["-m", "depot_upload", "relay"], database_url=database_url) as relay:
            latencies = await _latency(stack, database_url, relay, steps)
    _report_throughput(result, phases, payload, steps)
    _report_latency(result, latencies, steps)
    return result


def _report_throughput(result: Result, phases: dict[int, dict[str, Batch]], payload: int, steps: Plan) -> None:
    view = table(
        f"Outbox relay throughput: {steps.rows} document.stored events of {payload} B, acks=all, relay in-process",
        [
            "batch",
            "path",
            "s",
            "events/s",
            "relay/raw",
            "cpu ms/1k ev: client",
            "postgres",
            "kafka",
            "cores: busy",
            "other",
        ],
    )
    figures: dict[str, Any] = {"events": steps.rows, "payload_bytes": payload, "partitions": PARTITIONS}
    for batch_size, pair in phases.items():
        ratio = pair["relay"].per_s / pair["raw"].per_s
        figures[f"batch_{batch_size}"] = {
            "raw_produce_aiokafka": pair["aiokafka"].summary(),
            "raw_produce": pair["raw"].summary(),
            "relay": pair["relay"].summary() | {"ratio_to_raw": round(ratio, 3)},
        }
        paths = (("raw produce, aiokafka", pair["aiokafka"]), ("raw produce", pair["raw"]), ("relay", pair["relay"]))
        for path, batch in paths:
            view.add_row(
                str(batch_size),
                path,
                f"{batch.elapsed_s:.2f}",
                f"{batch.per_s:,.0f}",
                f"{ratio:.2f}" if path == "relay" else "",
                f"{batch.cpu_ms_per_event('client') * 1000:.0f}",
                f"{batch.cpu_ms_per_event('postgres') * 1000:.0f}",
                f"{batch.cpu_ms_per_event('kafka') * 1000:.0f}",
                f"{batch.busy_cores:.2f}",
                f"{batch.other_cores:.2f}",
            )
    best = max(phases, key=lambda size: phases[size]["relay"].per_s)
    gain = phases[best]["relay"].per_s / phases[DEFAULT_BATCH]["relay"].per_s - 1
    figures["best_batch_size"] = best
    result.figures["throughput"] = figures
    result.tables.append(view)
    default = phases[DEFAULT_BATCH]
    ratio = default["relay"].per_s / default["raw"].per_s
    result.checks.append(Check(f"relay/raw produce, batch {DEFAULT_BATCH}", ratio, TARGET_RATIO, "x"))
    result.checks.append(
        Check(f"relay throughput, batch {DEFAULT_BATCH}", default["relay"].per_s, TARGET_EVENTS_PER_S, "events/s")
    )
    result.notes.append(
        f"relay = depot_common.outbox.OutboxRelay in this process, from its start until every row is marked "
        f"published; raw produce = the same records, same producer (make_producer, acks=all), send a batch then "
        f"gather its acks. Best relay batch size here: {best}, {gain:+.0%} over the default {DEFAULT_BATCH} "
        "(DEPOT_RELAY_BATCH_SIZE; one run: differences of 10 % or so are noise on a shared machine). "
        "CPU: client = this process (relay or producer), postgres = the database's backends, kafka = tansu; "
        "other = busy minus those."
    )


def _report_latency(result: Result, latencies: dict[str, list[float]], steps: Plan) -> None:
    view = table(
        f"Commit → Kafka latency when idle: {steps.samples} events, one at a time, "
        f"{steps.pause_s[0] * 1000:.0f} to {steps.pause_s[1] * 1000:.0f} ms apart; relay process",
        ["until", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    figures: dict[str, Any] = {}
    for name, values in latencies.items():
        figures[name] = latency_summary(values)
        view.add_row(
            name,
            str(len(values)),
            *(f"{percentile(values, q) * 1000:.1f}" for q in (50, 90, 99)),
            f"{max(values) * 1000:.1f}",
        )
    result.figures["idle_latency"] = figures
    result.tables.append(view)
    fast = next(iter(latencies.values()))
    result.checks.append(
        Check(
            "commit → consumer sees it, p50", percentile(fast, 50) * 1000, TARGET_P50_MS, "ms", higher_is_better=False
        )
    )
    result.notes.append(
        "latency from the enqueue transaction's commit returning in this process; the relay is a `depot-upload "
        "relay` process woken by LISTEN/NOTIFY; consumers read in this process."
    )
