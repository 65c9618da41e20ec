"""Idempotent Kafka consumers: inbox dedup, bounded retries, dead-letter topic.

:class:`EventConsumer` reads a batch, handles each message in a PostgreSQL transaction
that also records the event id in ``<schema>.processed_events`` (a duplicate is a no-op),
and commits ``offset + 1`` only after that transaction committed. Transient failures are
retried with exponential backoff and jitter, a bounded number of times; permanent
failures (not JSON, unknown type, schema violation, a non-retriable ``DepotError``) and
exhausted retries go to ``<topic>.<group>.dlq`` with the error in headers, and the
consumer commits and moves on: it never crash-loops on one message.

The inbox table each consumer creates in its own schema is :func:`inbox_ddl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ValidationError

from depot_common.db import Connection, identifier
from depot_common.errors import DepotError
from depot_common.events.envelope import CloudEvent, RawCloudEvent
from depot_common.kafka import ensure_topics, make_consumer, make_producer

log = structlog.get_logger(__name__)

Handler = Callable[[Connection, CloudEvent[Any]], Awaitable[None]]

HANDLED = Counter("depot_consumer_events_total", "Events consumed, by outcome", ["group", "outcome"])
LAG = Gauge("depot_consumer_lag", "Messages behind the end of the partition", ["group", "topic", "partition"])


class PermanentError(Exception):
    """A message that can never be processed: it goes to the DLQ without retries."""


def inbox_ddl(schema: str) -> str:
    """The processed-event inbox a consumer creates in ``schema``."""
    return (
        f"CREATE TABLE {identifier(schema)}.processed_events"
        " (event_id uuid PRIMARY KEY, processed_at timestamptz NOT NULL DEFAULT now())"
    )


def dlq_topic(topic: str, group: str) -> str:
    return f"{topic}.{group}.dlq"


class EventConsumer:
    """Runs ``handlers`` (by CloudEvents type) over ``consumer``'s messages, idempotently."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        schema: str,
        group: str,
        handlers: Mapping[str, tuple[type[BaseModel], Handler]],
        ignored_types: frozenset[str] = frozenset(),
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._schema = identifier(schema)
        self._group = group
        self._handlers = handlers
        self._ignored = ignored_types
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the message in hand, commit, and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, then work the partitions of each batch concurrently: a partition's records (one
        document's events) stay in order, while one slow record never holds up the others."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=500)
            await asyncio.gather(*(self._run_partition(partition, records) for partition, records in batch.items()))

    async def _run_partition(self, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        done: ConsumerRecord[bytes, bytes] | None = None
        for record in records:
            if self._stopping.is_set():
                break
            await self.process(record)
            done = record
        if done is not None:
            await self._commit(partition, done.offset + 1)
            highwater = self._consumer.highwater(partition)
            if highwater is not None:
                LAG.labels(self._group, partition.topic, str(partition.partition)).set(
                    max(0, highwater - done.offset - 1)
                )

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        """Commit after the effects committed; a rebalance that took the partition away is not an error:
        its new owner re-reads from the last commit and the inbox turns the repeats into no-ops."""
        try:
            await self._consumer.commit({partition: offset})
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("consumer.commit_failed", partition=str(partition), offset=offset, error=repr(error))

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one record: apply it once, or dead-letter it."""
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        with structlog.contextvars.bound_contextvars(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            traceparent=headers.get("traceparent"),
        ):
            try:
                event, handler = self._decode(record)
            except PermanentError as error:
                await self._dead_letter(record, error, attempts=1)
                return
            if handler is None:
                HANDLED.labels(self._group, "ignored").inc()
                return
            with structlog.contextvars.bound_contextvars(event_id=str(event.id), event_type=event.type):
                await self._apply_with_retries(record, event, handler)

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> tuple[CloudEvent[Any], Handler | None]:
        if record.value is None:
            raise PermanentError("empty message value")
        try:
            raw = RawCloudEvent.model_validate_json(record.value)
        except ValidationError as error:
            raise PermanentError(f"not a CloudEvent: {error}") from None
        if raw.type in self._ignored:
            return raw, None
        if raw.type not in self._handlers:
            raise PermanentError(f"unknown event type {raw.type!r}")
        model, handler = self._handlers[raw.type]
        try:
            data = model.model_validate(raw.data)
        except ValidationError as error:
            raise PermanentError(f"{raw.type} data violates its schema: {error}") from None
        return CloudEvent[Any](**{**raw.model_dump(exclude={"data"}), "data": data}), handler

    async def _apply_with_retries(
        self, record: ConsumerRecord[bytes, bytes], event: CloudEvent[Any], handler: Handler
    ) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                applied = await self._apply(event, handler)
            except Exception as error:
                retriable = not isinstance(error, DepotError) or error.retriable
                if not retriable or attempt == self._max_attempts:
                    await self._dead_letter(record, error, attempts=attempt)
                    return
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
                log.warning("consumer.retry", attempt=attempt, delay_s=round(delay, 3), error=repr(error))
                await asyncio.sleep(delay)
            else:
                HANDLED.labels(self._group, "applied" if applied else "duplicate").inc()
                log.info("consumer.applied" if applied else "consumer.duplicate")
                return

    async def _apply(self, event: CloudEvent[Any], handler: Handler) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                f"INSERT INTO {self._schema}.processed_events (event_id) VALUES ($1)"
                " ON CONFLICT DO NOTHING RETURNING true",
                event.id,
            )
            if not fresh:
                return False
            await handler(conn, event)
            return True

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: Exception, *, attempts: int) -> None:
        topic = dlq_topic(record.topic, self._group)
        headers = [
            *(record.headers or ()),
            ("x-error", repr(error)[:4000].encode()),
            ("x-original-topic", record.topic.encode()),
            ("x-original-partition", str(record.partition).encode()),
            ("x-original-offset", str(record.offset).encode()),
            ("x-attempts", str(attempts).encode()),
        ]
        await self._producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
        HANDLED.labels(self._group, "dead_lettered").inc()
        log.error("consumer.dead_lettered", dlq=topic, attempts=attempts, error=repr(error))


@contextlib.asynccontextmanager
async def running_consumer(
    *,
    bootstrap: list[str],
    topics: Mapping[str, int],
    group: str,
    session_timeout: int,
    pool: asyncpg.Pool,
    schema: str,
    handlers: Mapping[str, tuple[type[BaseModel], Handler]],
    ignored_types: frozenset[str] = frozenset(),
) -> AsyncIterator[EventConsumer]:
    """An :class:`EventConsumer` of ``topics`` (name → partitions when created) for ``group``, its
    topics and dead-letter topics ensured, its Kafka clients started; everything stopped on exit."""
    await ensure_topics(bootstrap, {**topics, **{dlq_topic(topic, group): 1 for topic in topics}})
    producer = make_producer(bootstrap)
    consumer = make_consumer(
        bootstrap,
        *topics,
        group_id=group,
        session_timeout_ms=session_timeout * 1000,
        heartbeat_interval_ms=session_timeout * 1000 // 5,
    )
    await producer.start()
    try:
        await consumer.start()
        try:
            yield EventConsumer(
                consumer=consumer,
                producer=producer,
                pool=pool,
                schema=schema,
                group=group,
                handlers=handlers,
                ignored_types=ignored_types,
            )
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
