"""The idempotent consumer framework against a real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from depot_common import tracing
from depot_common.consumer import EventConsumer, dlq_topic
from depot_common.db import Connection
from depot_common.errors import BadRequest, Unavailable
from depot_common.events import CloudEvent, encode
from depot_common.kafka import make_consumer
from depot_common.staged import Queryable, Staged
from tests.consumer_helpers import Scratch, effects, note, running_consumer, scratch_world, wait_for_effects
from tests.kafka_helpers import read_until


@pytest.fixture
async def scratch(pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[Scratch]:
    """A schema with an inbox and an effects table, a fresh topic and its DLQ."""
    async with scratch_world(pg_pool, kafka_bootstrap, prefix="consumer", partitions=1) as world:
        yield world


@pytest.fixture
async def running(scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[EventConsumer]:
    """An EventConsumer over the scratch topic whose handler records each note's text."""

    async def record(conn: Connection, event: CloudEvent[Any]) -> None:
        text = event.data.text
        if text.startswith("flaky") and scratch.failures.get(text, 0) < 2:
            scratch.failures[text] = scratch.failures.get(text, 0) + 1
            raise Unavailable("temporarily down")
        if text.startswith("broken"):
            raise Unavailable("always down")
        if text.startswith("refused"):
            raise BadRequest("never acceptable")
        if text.startswith("traced"):
            text = f"{text} {tracing.current_traceparent()}"  # what an event enqueued here would carry
        await conn.execute(f"INSERT INTO {scratch.schema}.effects (text) VALUES ($1)", text)

    options = {"ignored_types": frozenset({"test.other"}), "max_attempts": 3}
    async with running_consumer(scratch, pg_pool, kafka_bootstrap, record, **options) as event_consumer:
        yield event_consumer


async def send(
    scratch: Scratch, value: bytes, key: bytes = b"k", headers: list[tuple[str, bytes]] | None = None
) -> None:
    await scratch.producer.send_and_wait(scratch.topic, value=value, key=key, headers=headers)


async def test_the_handler_runs_in_the_trace_of_the_traceparent_header(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool
) -> None:
    """Tracing off (no SDK, as in this process): the handler still runs in the header's trace, so what it
    enqueues and logs continues it; a record without the header is handled outside any trace."""
    traceparent = tracing.new_traceparent()
    await send(scratch, encode(note("traced-1")), headers=[("traceparent", traceparent.encode())])
    await send(scratch, encode(note("traced-2")))
    found: list[str] = []
    for _ in range(100):
        if len(found := await effects(pg_pool, scratch.schema)) == 2:
            break
        await asyncio.sleep(0.1)
    [first, second] = found
    assert first == f"traced-1 {traceparent}"
    assert second == "traced-2 None"


async def test_a_redelivered_event_takes_effect_once(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """The same event id delivered twice is applied once; offsets are committed past both."""
    event = note("once")
    await send(scratch, encode(event))
    await send(scratch, encode(event))
    await send(scratch, encode(note("after")))
    assert await wait_for_effects(pg_pool, scratch.schema, ["after", "once"]) == ["after", "once"]
    probe = make_consumer([kafka_bootstrap], scratch.topic, group_id=scratch.group, session_timeout_ms=2000)
    await probe.start()
    try:
        partition = TopicPartition(scratch.topic, 0)
        for _ in range(50):
            if await probe.committed(partition) == 3:
                break
            await asyncio.sleep(0.1)
        assert await probe.committed(partition) == 3
    finally:
        await probe.stop()
    lag = {"group": scratch.group, "topic": scratch.topic, "partition": "0"}
    assert REGISTRY.get_sample_value("depot_consumer_lag", lag) == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json at all", "not a CloudEvent"),
        (encode(note("x", type_="test.unknown")), "unknown event type"),
        (
            b'{"specversion":"1.0","id":"6d1f7f57-3c59-4a55-9d2c-3d1f7e0a5a11","source":"t","type":"test.note",'
            b'"subject":"s","time":"2026-01-01T00:00:00Z","data":{"wrong":1}}',
            "violates its schema",
        ),
        (encode(note("refused-1")), "never acceptable"),
    ],
)
async def test_poison_messages_go_to_the_dlq_and_the_consumer_moves_on(
    scratch: Scratch,
    running: EventConsumer,
    pg_pool: asyncpg.Pool,
    kafka_bootstrap: str,
    value: bytes,
    reason: str,
) -> None:
    """Unparseable, unknown, schema-violating or refused messages are dead-lettered with error headers;
    the next message is applied."""
    await send(scratch, value)
    await send(scratch, encode(note("next")))
    assert await wait_for_effects(pg_pool, scratch.schema, ["next"]) == ["next"]
    [dead] = await read_until(kafka_bootstrap, dlq_topic(scratch.topic, scratch.group), lambda rs: len(rs) >= 1)
    headers = dict(dead.headers)
    assert dead.value == value
    assert reason in headers["x-error"].decode()
    assert headers["x-original-topic"] == scratch.topic.encode()
    assert headers["x-original-partition"] == b"0"
    assert headers["x-original-offset"] == b"0"
    assert headers["x-attempts"] == b"1"


async def test_transient_failures_are_retried_until_they_succeed(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool
) -> None:
    """A handler that fails twice with a retriable error is retried and applied once."""
    await send(scratch, encode(note("flaky-1")))
    assert await wait_for_effects(pg_pool, scratch.schema, ["flaky-1"]) == ["flaky-1"]
    assert scratch.failures["flaky-1"] == 2


async def test_exhausted_retries_dead_letter_the_message(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """A message still failing after the bounded attempts goes to the DLQ with x-attempts, and the stream continues."""
    await send(scratch, encode(note("broken-1")))
    await send(scratch, encode(note("fine")))
    assert await wait_for_effects(pg_pool, scratch.schema, ["fine"]) == ["fine"]
    [dead] = await read_until(kafka_bootstrap, dlq_topic(scratch.topic, scratch.group), lambda rs: len(rs) >= 1)
    assert dict(dead.headers)["x-attempts"] == b"3"


async def test_types_owned_by_another_consumer_are_skipped(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """An event type this consumer does not own is neither applied nor dead-lettered."""
    await send(scratch, encode(note("theirs", type_="test.other")))
    await send(scratch, encode(note("ours")))
    assert await wait_for_effects(pg_pool, scratch.schema, ["ours"]) == ["ours"]
    assert await read_until(kafka_bootstrap, dlq_topic(scratch.topic, scratch.group), lambda rs: False, timeout=1) == []


@contextlib.asynccontextmanager
async def _consume_published(
    scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str, texts: list[str], handler: Any
) -> AsyncIterator[EventConsumer]:
    """Publish a note per text (one partition, all before the consumer starts, so one fetch hands them to the
    worker together), then run an EventConsumer with ``handler`` over them."""
    futures = [await scratch.producer.send(scratch.topic, value=encode(note(text)), key=b"k") for text in texts]
    await asyncio.gather(*futures)
    async with running_consumer(scratch, pg_pool, kafka_bootstrap, handler, max_attempts=2) as event_consumer:
        yield event_consumer


async def test_consecutive_records_of_a_partition_share_one_transaction(
    scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """Records fetched together are applied in one transaction (one txid), each once, in their order; a Staged
    handler's reads run before it, on the pool."""
    reads: list[tuple[str, bool]] = []

    async def read(db: Queryable, event: CloudEvent[Any]) -> str:
        reads.append((event.data.text, db is pg_pool))  # the pool: no connection (nor transaction) held
        return str(event.data.text).upper()

    async def apply(conn: Connection, event: CloudEvent[Any], found: str) -> None:
        await conn.execute(f"INSERT INTO {scratch.schema}.effects (text) VALUES ($1 || ' ' || txid_current())", found)

    texts = [f"n{number}" for number in range(6)]
    async with _consume_published(scratch, pg_pool, kafka_bootstrap, texts, Staged(read, apply)):
        for _ in range(100):
            if len(found := await effects(pg_pool, scratch.schema)) == len(texts):
                break
            await asyncio.sleep(0.1)
    assert [text.split()[0] for text in found] == [text.upper() for text in texts]
    assert len({text.split()[1] for text in found}) == 1, "one transaction"
    assert sorted(reads) == [(text, True) for text in texts], "each read once, on the pool"


async def test_a_staged_settle_spares_a_batch_its_reads_in_one_call(
    scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """A Staged handler's settle is asked once for the whole batch; the events it settles are applied with what
    it answered and never read, the others are read as before."""
    settles: list[list[str]] = []
    reads: list[str] = []

    async def settle(db: Queryable, events: Sequence[CloudEvent[Any]]) -> list[str | None]:
        settles.append([event.data.text for event in events])
        return ["settled" if event.data.text.startswith("old") else None for event in events]

    async def read(db: Queryable, event: CloudEvent[Any]) -> str:
        reads.append(event.data.text)
        return f"read {event.data.text}"

    async def apply(conn: Connection, event: CloudEvent[Any], found: str) -> None:
        await conn.execute(f"INSERT INTO {scratch.schema}.effects (text) VALUES ($1)", f"{event.data.text} {found}")

    texts = ["new1", "old1", "new2", "old2"]
    async with _consume_published(scratch, pg_pool, kafka_bootstrap, texts, Staged(read, apply, settle)):
        expected = ["new1 read new1", "old1 settled", "new2 read new2", "old2 settled"]
        found = await wait_for_effects(pg_pool, scratch.schema, expected)
    assert found == sorted(expected)
    assert settles == [texts], "one settle for the batch"
    assert sorted(reads) == ["new1", "new2"], "settled events are not read"


async def test_a_failing_event_in_a_batch_takes_no_other_event_to_the_dlq(
    scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """One event of a batch always failing: the batch rolls back, its records are retried one at a time; the
    others are applied once each, only the failing one is dead-lettered."""
    calls: list[str] = []

    async def record(conn: asyncpg.Connection, event: CloudEvent[Any]) -> None:
        calls.append(event.data.text)
        if event.data.text == "bad":
            raise Unavailable("always down")
        await conn.execute(f"INSERT INTO {scratch.schema}.effects (text) VALUES ($1)", event.data.text)

    texts = ["a", "b", "bad", "c", "d"]
    async with _consume_published(scratch, pg_pool, kafka_bootstrap, texts, record):
        found = await wait_for_effects(pg_pool, scratch.schema, ["a", "b", "c", "d"])
        dead = await read_until(kafka_bootstrap, dlq_topic(scratch.topic, scratch.group), lambda rs: len(rs) >= 1)
    assert found == ["a", "b", "c", "d"]
    assert [json.loads(record.value)["data"]["text"] for record in dead] == ["bad"]
    assert dict(dead[0].headers)["x-attempts"] == b"2"
    assert calls[:3] == ["a", "b", "bad"], "tried together first"
    assert calls.count("a") == 2, "then one at a time after the rollback"
