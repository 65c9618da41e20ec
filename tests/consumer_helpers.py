"""A scratch world for EventConsumer tests: a schema with an inbox and an effects table, a topic and its DLQ,
and a consumer over it whose handler records each note's text."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from depot_common.consumer import EventConsumer, dlq_topic, inbox_ddl
from depot_common.db import Connection
from depot_common.events import CloudEvent
from depot_common.kafka import ensure_topics, make_consumer, make_producer
from tests.conftest import background


class Note(BaseModel):
    text: str


def note(text: str, type_: str = "test.note") -> CloudEvent[Any]:
    return CloudEvent[Note](source="test", type=type_, subject=text, data=Note(text=text))


@dataclass
class Scratch:
    schema: str
    topic: str
    group: str
    producer: AIOKafkaProducer
    #: how often each note's handler failed so far (for handlers that fail a few times)
    failures: dict[str, int] = field(default_factory=dict)
    #: notes whose handler fails for as long as they are in here
    broken: set[str] = field(default_factory=set)

    @property
    def dlq(self) -> str:
        return dlq_topic(self.topic, self.group)


@contextlib.asynccontextmanager
async def scratch_world(pool: asyncpg.Pool, bootstrap: str, *, prefix: str, partitions: int) -> AsyncIterator[Scratch]:
    """A schema with an inbox and an effects table, a fresh topic of ``partitions`` and its DLQ; dropped after."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    topic, group = f"test.{schema}", f"group-{schema}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(inbox_ddl(schema))
    await pool.execute(f"CREATE TABLE {schema}.effects (text text NOT NULL)")
    await ensure_topics([bootstrap], {topic: partitions, dlq_topic(topic, group): 1})
    producer = make_producer([bootstrap])
    await producer.start()
    try:
        yield Scratch(schema, topic, group, producer)
    finally:
        await producer.stop()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")


Handler = Callable[[Connection, CloudEvent[Any]], Awaitable[None]]


@contextlib.asynccontextmanager
async def running_consumer(
    scratch: Scratch, pool: asyncpg.Pool, bootstrap: str, record: Handler, **options: Any
) -> AsyncIterator[EventConsumer]:
    """An EventConsumer over the scratch topic handling ``test.note`` with ``record``; ``options`` go to it."""
    consumer = make_consumer([bootstrap], scratch.topic, group_id=scratch.group, session_timeout_ms=2000)
    await consumer.start()
    event_consumer = EventConsumer(
        consumer=consumer,
        producer=scratch.producer,
        pool=pool,
        schema=scratch.schema,
        group=scratch.group,
        handlers={"test.note": (Note, record)},
        backoff_base=0.01,
        **options,
    )
    try:
        async with background(event_consumer.run()):
            yield event_consumer
    finally:
        await consumer.stop()


async def effects(pool: asyncpg.Pool, schema: str) -> list[str]:
    return [row["text"] for row in await pool.fetch(f"SELECT text FROM {schema}.effects ORDER BY text")]


async def wait_for_effects(pool: asyncpg.Pool, schema: str, expected: list[str], timeout: float = 15) -> list[str]:
    """The effects once they are ``expected`` (in any order), or what they are after ``timeout`` seconds."""
    found: list[str] = []
    for _ in range(int(timeout / 0.1)):
        found = await effects(pool, schema)
        if found == sorted(expected):
            break
        await asyncio.sleep(0.1)
    return found
