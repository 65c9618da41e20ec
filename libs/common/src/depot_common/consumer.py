"""Idempotent Kafka consumers: inbox dedup, bounded retries, dead-letter topic, outages waited out.

:class:`EventConsumer` keeps polling the broker and hands each partition's records to a
worker of that partition (paused at the broker while its records are in hand, so one
document's events stay in order while one slow partition never holds up the others).
Each message is handled in a PostgreSQL transaction that also records the event id in
``<schema>.processed_events`` (a duplicate is a no-op), and ``offset + 1`` is committed
only after that transaction committed. Consecutive records of one partition share one
transaction (up to :data:`BATCH_MAX`): the inbox rows of all in one statement, then each new
event's handler in order; a :class:`~depot_common.staged.Staged` handler's read (an S3
download) runs before that transaction opens, those of a batch a few at a time, after one
``settle`` of the batch has spared the events that need none (stale ones). When
anything in a batch fails, it rolls back whole and its records are handled one at a time as
below, so a bad event never takes good ones to the DLQ.

Two kinds of failure, told apart by :func:`depot_common.outages.dependency_unavailable`:

- a *dependency outage* (PostgreSQL, S3 or the broker down): the partition stays paused and
  the message is tried again with capped, jittered backoff for as long as the outage lasts,
  spending none of its retries; :meth:`EventConsumer.waiting_for` names the dependency
  (``/readyz`` is false meanwhile) and ``depot_consumer_paused_partitions`` counts them;
- a *fault of the message* (not JSON, unknown type, schema violation, a non-retriable
  ``DepotError``, or still failing after ``max_attempts``): it goes to
  ``<topic>.<group>.dlq`` with the error in headers, and the consumer commits and moves on:
  it never crash-loops on one message.

A rebalance may take a partition away at any await: every per-partition call checks the
assignment first, and a worker whose partition was revoked stops; the new owner re-reads
from the last commit and the inbox turns the repeats into no-ops.

The inbox table each consumer creates in its own schema is :func:`inbox_ddl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ValidationError

from depot_common import tracing
from depot_common.db import Connection, identifier
from depot_common.errors import Dependency, DependencyUnavailable, DepotError
from depot_common.events.envelope import CloudEvent, RawCloudEvent
from depot_common.kafka import ensure_topics, make_consumer, make_producer
from depot_common.outages import dependency_unavailable
from depot_common.staged import Staged

log = structlog.get_logger(__name__)

Handler = Callable[[Connection, CloudEvent[Any]], Awaitable[None]]

HANDLED = Counter("depot_consumer_events_total", "Events consumed, by outcome", ["group", "outcome"])
LAG = Gauge("depot_consumer_lag", "Messages behind the end of the partition", ["group", "topic", "partition"])
PAUSED = Gauge(
    "depot_consumer_paused_partitions",
    "Partitions paused while a dependency is unavailable",
    ["group", "dependency"],
)
DEPENDENCIES: tuple[Dependency, ...] = ("postgresql", "s3", "kafka")


#: At most this many records of one partition share a transaction.
BATCH_MAX = 32
#: At most this many :class:`~depot_common.staged.Staged` reads of one batch run at once.
READ_CONCURRENCY = 4


class PermanentError(Exception):
    """A message that can never be processed: it goes to the DLQ without retries."""


@dataclass(frozen=True)
class _Inbound:
    """A fetched record, decoded once: its event and handler (no handler: a type another service executes),
    or why it can never be handled (``error``, no event)."""

    record: ConsumerRecord[bytes, bytes]
    traceparent: str | None
    event: CloudEvent[Any] | None
    handler: Handler | None
    error: PermanentError | None

    @functools.cached_property
    def fields(self) -> dict[str, Any]:
        """What log lines say of the record (and of its event) while it is handled (computed once)."""
        record = self.record
        fields: dict[str, Any] = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        if self.event is not None and self.handler is not None:
            fields |= {"event_id": str(self.event.id), "event_type": self.event.type}
        return fields


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
        outage_backoff_max: float = 5.0,
        batch_max: int = BATCH_MAX,
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
        self._outage_backoff_max = outage_backoff_max
        self._batch_max = batch_max
        self._stopping = asyncio.Event()
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._waiting: dict[TopicPartition, Dependency] = {}  # partitions paused by an outage
        self._outage_waits: dict[TopicPartition, int] = {}
        self._broker_outage = False  # the fetch itself is failing
        self.running = False

    def stop(self) -> None:
        """Finish the message in hand, commit, and return from :meth:`run`."""
        self._stopping.set()

    def waiting_for(self) -> frozenset[Dependency]:
        """The dependencies this consumer is waiting out (empty when it is working normally)."""
        return frozenset(self._waiting.values()) | (frozenset({"kafka"}) if self._broker_outage else frozenset())

    async def run(self) -> None:
        """Poll the broker and hand each partition's records to its worker, until :meth:`stop`."""
        fetch: asyncio.Task[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] | None = None
        # What startup allocated (botocore's service models, pydantic's schemas, modules) lives as long as the
        # process: out of the collector's sight, a full collection no longer stalls every partition ~100 ms.
        gc.freeze()
        self.running = True
        try:
            while not self._stopping.is_set():
                if fetch is None:
                    fetch = asyncio.ensure_future(self._consumer.getmany(timeout_ms=500))
                await asyncio.wait({fetch, *self._workers.values()}, return_when=asyncio.FIRST_COMPLETED)
                self._reap()
                if fetch.done():
                    done, fetch = fetch, None
                    batch = await self._fetched(done)
                    for partition, records in batch.items():
                        self._start_worker(partition, records)
        finally:
            self.running = False
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await fetch
            self._stopping.set()  # workers finish the record in hand, commit, and return
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
            self._reap()

    async def _fetched(
        self, fetch: asyncio.Task[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The fetched batch; a broker outage is waited out (nothing is lost: positions did not move)."""
        try:
            batch = fetch.result()
        except Exception as error:
            outage = dependency_unavailable(error)
            if outage is None:
                raise
            self._broker_outage = True
            log.warning("consumer.fetch_failed", dependency=outage.dependency, error=repr(error))
            await self._sleep(self._outage_delay(1))
            return {}
        if self._broker_outage:
            self._broker_outage = False
            log.info("consumer.dependency_recovered", dependency="kafka")
        return batch

    def _start_worker(self, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Pause ``partition`` while its records are in hand; a worker still busy with it (the partition was
        taken away and given back meanwhile) finishes first, so its records stay in order."""
        self._pause(partition)
        previous = self._workers.get(partition)
        self._workers[partition] = asyncio.ensure_future(self._run_partition(partition, records, after=previous))

    def _reap(self) -> None:
        """Forget finished workers and resume their partitions; a worker's unexpected error stops the consumer."""
        for partition, task in list(self._workers.items()):
            if not task.done():
                continue
            del self._workers[partition]
            self._resume(partition)
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _run_partition(
        self,
        partition: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
        *,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        done: ConsumerRecord[bytes, bytes] | None = None
        inbound = [self._inbound(record) for record in records]
        start = 0
        while start < len(inbound):
            if self._stopping.is_set() or not self._assigned(partition):
                break
            batch = self._batch_at(inbound, start)
            if len(batch) > 1 and await self._apply_batch(partition, batch):
                done = batch[-1].record
                start += len(batch)
                continue
            # One at a time (with retries and the DLQ): a lone record, or each record of a batch that failed.
            settled = 0
            for item in inbound[start : start + max(1, len(batch))]:
                if self._stopping.is_set() or not self._assigned(partition) or not await self._settle(item):
                    break
                done = item.record
                settled += 1
            if settled < max(1, len(batch)):
                break
            start += settled
        if done is not None:
            await self._commit(partition, done.offset + 1)
            self._record_lag(partition, done.offset)

    def _batch_at(self, inbound: list[_Inbound], start: int) -> list[_Inbound]:
        """The records from ``start`` on that can share one transaction: decoded events of handled types."""
        batch: list[_Inbound] = []
        for item in inbound[start : start + self._batch_max]:
            if item.handler is None:
                break
            batch.append(item)
        return batch

    def _assigned(self, partition: TopicPartition) -> bool:
        return partition in self._consumer.assignment()

    def _pause(self, partition: TopicPartition) -> None:
        if self._assigned(partition):
            self._consumer.pause(partition)

    def _resume(self, partition: TopicPartition) -> None:
        if self._assigned(partition):
            self._consumer.resume(partition)

    def _record_lag(self, partition: TopicPartition, offset: int) -> None:
        highwater = self._consumer.highwater(partition) if self._assigned(partition) else None
        if highwater is not None:
            LAG.labels(self._group, partition.topic, str(partition.partition)).set(max(0, highwater - offset - 1))

    async def _commit(self, partition: TopicPartition, offset: int) -> None:
        """Commit after the effects committed. A rebalance that took the partition away, or a broker that is
        down, is not an error: the next commit covers it, or the partition's next owner re-reads from the last
        commit and the inbox turns the repeats into no-ops."""
        if not self._assigned(partition):
            log.info("consumer.commit_skipped", partition=str(partition), offset=offset, reason="revoked")
            return
        try:
            await self._consumer.commit({partition: offset})
        except KafkaError as error:
            log.warning("consumer.commit_failed", partition=str(partition), offset=offset, error=repr(error))

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle one record: apply it once, or dead-letter it. False when it was left unsettled (the consumer
        is stopping, or the partition was taken away, while a dependency was down)."""
        return await self._settle(self._inbound(record))

    def _inbound(self, record: ConsumerRecord[bytes, bytes]) -> _Inbound:
        """``record`` decoded (once), with its handler; or the reason it can never be handled."""
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        traceparent = headers.get("traceparent")
        try:
            event, handler = self._decode(record)
        except PermanentError as error:
            return _Inbound(record, traceparent, None, None, error)
        return _Inbound(record, traceparent, event, handler, None)

    def _span(self, item: _Inbound) -> Span:
        record = item.record
        return tracing.start_consuming(record.topic, record.partition, record.offset, self._group, item.traceparent)

    async def _settle(self, item: _Inbound) -> bool:
        """:meth:`process` of a decoded record."""
        span = self._span(item)
        try:
            with tracing.within(span), self._bound(item):
                if item.error is not None:
                    return await self._dead_letter(item.record, item.error, attempts=1)
                if item.event is None or item.handler is None:
                    HANDLED.labels(self._group, "ignored").inc()
                    return True
                return await self._apply_with_retries(item.record, item.event, item.handler)
        finally:
            span.end()

    @contextlib.contextmanager
    def _bound(self, item: _Inbound) -> Iterator[None]:
        """Log lines name the record (and its event) while it is handled (bound, then reset to what they were:
        ``bound_contextvars`` without its walk over every context variable)."""
        tokens = structlog.contextvars.bind_contextvars(**item.fields)
        try:
            yield
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

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
        return raw.model_copy(update={"data": data}), handler  # the envelope was validated above

    async def _apply_with_retries(
        self, record: ConsumerRecord[bytes, bytes], event: CloudEvent[Any], handler: Handler
    ) -> bool:
        partition = TopicPartition(record.topic, record.partition)
        attempt = 0
        while True:
            try:
                applied = await self._apply(event, handler)
            except Exception as error:
                outage = dependency_unavailable(error)
                if outage is not None:  # not the message's fault: its retries are not spent
                    if not await self._wait_out(partition, outage, error):
                        return False
                    continue
                attempt += 1
                retriable = not isinstance(error, DepotError) or error.retriable
                if not retriable or attempt >= self._max_attempts:
                    return await self._dead_letter(record, error, attempts=attempt)
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
                log.warning("consumer.retry", attempt=attempt, delay_s=round(delay, 3), error=repr(error))
                await asyncio.sleep(delay)
            else:
                self._recovered(partition)
                HANDLED.labels(self._group, "applied" if applied else "duplicate").inc()
                log.info("consumer.applied" if applied else "consumer.duplicate")
                return True

    async def _wait_out(self, partition: TopicPartition, outage: DependencyUnavailable, error: Exception) -> bool:
        """Keep ``partition`` paused and wait before the next try; False when the consumer is stopping or the
        partition was taken away meanwhile (the record stays uncommitted for whoever owns it next)."""
        waits = self._outage_waits.get(partition, 0) + 1
        self._outage_waits[partition] = waits
        if self._waiting.get(partition) != outage.dependency:
            self._waiting[partition] = outage.dependency
            self._count_paused()
        delay = self._outage_delay(waits)
        log.warning(
            "consumer.dependency_unavailable",
            dependency=outage.dependency,
            waits=waits,
            delay_s=round(delay, 3),
            error=repr(error),
        )
        await self._sleep(delay)
        if self._stopping.is_set() or not self._assigned(partition):
            self._recovered(partition, log_it=False)
            return False
        return True

    def _recovered(self, partition: TopicPartition, *, log_it: bool = True) -> None:
        waits = self._outage_waits.pop(partition, 0)
        dependency = self._waiting.pop(partition, None)
        if dependency is not None:
            self._count_paused()
            if log_it:
                log.info("consumer.dependency_recovered", dependency=dependency, waits=waits)

    def _count_paused(self) -> None:
        for dependency in DEPENDENCIES:
            PAUSED.labels(self._group, dependency).set(sum(1 for d in self._waiting.values() if d == dependency))

    def _outage_delay(self, waits: int) -> float:
        delay: float = min(self._outage_backoff_max, self._backoff_base * 2 ** (waits - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less when the consumer is asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _apply(self, event: CloudEvent[Any], handler: Handler) -> bool:
        found = await handler.prepare(self._pool, event) if isinstance(handler, Staged) else None
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                f"INSERT INTO {self._schema}.processed_events (event_id) VALUES ($1)"
                " ON CONFLICT DO NOTHING RETURNING true",
                event.id,
            )
            if not fresh:
                return False
            await (handler.apply(conn, event, found) if isinstance(handler, Staged) else handler(conn, event))
            return True

    async def _apply_batch(self, partition: TopicPartition, batch: list[_Inbound]) -> bool:
        """Apply ``batch`` (decoded records of one partition, in order) in one transaction: each event's
        :class:`~depot_common.staged.Staged` read first, then the inbox rows of all, then each new event's
        handler. True when it committed; on any error nothing of it stays and the caller handles the records
        one at a time, so one bad event never takes the others to the DLQ (nor an outage, its retries)."""
        spans = [self._span(item) for item in batch]
        try:
            applied = await self._apply_all(batch, spans)
        except Exception as error:
            log.warning("consumer.batch_rolled_back", records=len(batch), error=repr(error))
            for span in spans:
                span.set_status(Status(StatusCode.ERROR, "batch rolled back; its records are handled one at a time"))
                span.end()
            return False
        self._recovered(partition)
        for item, span, fresh in zip(batch, spans, applied, strict=True):
            with tracing.within(span), self._bound(item):
                HANDLED.labels(self._group, "applied" if fresh else "duplicate").inc()
                log.info("consumer.applied" if fresh else "consumer.duplicate")
            span.end()
        return True

    async def _apply_all(self, batch: list[_Inbound], spans: list[Span]) -> list[bool]:
        events = [item.event for item in batch if item.event is not None]
        handlers = [item.handler for item in batch if item.handler is not None]
        with tracing.within(spans[0]):  # like the batch's BEGIN, inbox INSERT and COMMIT
            settled = await self._settle_batch(events, handlers)
        found = await self._read_all(batch, events, handlers, spans, settled)
        async with self._pool.acquire() as conn:
            with tracing.within(spans[0]):
                async with conn.transaction():
                    rows = await conn.fetch(
                        f"INSERT INTO {self._schema}.processed_events (event_id) SELECT unnest($1::uuid[])"
                        " ON CONFLICT DO NOTHING RETURNING event_id",
                        [event.id for event in events],
                    )
                    fresh = {row["event_id"] for row in rows}
                    applied: list[bool] = []
                    for event, handler, value, item, span in zip(events, handlers, found, batch, spans, strict=True):
                        if event.id not in fresh:  # processed before, or earlier in this batch
                            applied.append(False)
                            continue
                        fresh.discard(event.id)
                        with tracing.within(span), self._bound(item):
                            if isinstance(handler, Staged):
                                await handler.apply(conn, event, value)
                            else:
                                await handler(conn, event)
                        applied.append(True)
        return applied

    async def _read_all(
        self,
        batch: list[_Inbound],
        events: list[CloudEvent[Any]],
        handlers: list[Handler],
        spans: list[Span],
        settled: list[Any],
    ) -> list[Any]:
        """Each unsettled :class:`~depot_common.staged.Staged` event's read, :data:`READ_CONCURRENCY` at a time:
        that many readers take the next event in turn (a task per reader, not per event); the first failure
        cancels the others."""
        found = list(settled)
        unread = iter(
            [number for number, handler in enumerate(handlers) if isinstance(handler, Staged) and found[number] is None]
        )

        async def reader() -> None:
            for number in unread:
                handler = handlers[number]
                assert isinstance(handler, Staged)
                with tracing.within(spans[number]), self._bound(batch[number]):
                    found[number] = await handler.read(self._pool, events[number])

        readers = [asyncio.ensure_future(reader()) for _ in range(READ_CONCURRENCY)]
        try:
            await asyncio.gather(*readers)
        finally:
            for task in readers:
                task.cancel()
        return found

    async def _settle_batch(self, events: list[CloudEvent[Any]], handlers: list[Handler]) -> list[Any]:
        """Per event, what its :class:`~depot_common.staged.Staged` handler settled without a read (one ``settle``
        per handler for the whole batch), else ``None``."""
        settled: list[Any] = [None] * len(events)
        staged = {id(handler): handler for handler in handlers if isinstance(handler, Staged)}
        for handler in staged.values():
            positions = [number for number, other in enumerate(handlers) if other is handler]
            answers = await handler.settled(self._pool, [events[number] for number in positions])
            for number, answer in zip(positions, answers, strict=True):
                settled[number] = answer
        return settled

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: Exception, *, attempts: int) -> bool:
        """Publish ``record`` to its DLQ (waiting out a broker outage); False if left unsettled."""
        topic = dlq_topic(record.topic, self._group)
        partition = TopicPartition(record.topic, record.partition)
        headers = [
            *(record.headers or ()),
            ("x-error", repr(error)[:4000].encode()),
            ("x-original-topic", record.topic.encode()),
            ("x-original-partition", str(record.partition).encode()),
            ("x-original-offset", str(record.offset).encode()),
            ("x-attempts", str(attempts).encode()),
        ]
        while True:
            try:
                await self._producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
            except Exception as send_error:
                outage = dependency_unavailable(send_error)
                if outage is None:
                    raise
                if not await self._wait_out(partition, outage, send_error):
                    return False
            else:
                break
        self._recovered(partition)
        HANDLED.labels(self._group, "dead_lettered").inc()
        log.error("consumer.dead_lettered", dlq=topic, attempts=attempts, error=repr(error))
        return True


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
    replica_id: str = "",
) -> AsyncIterator[EventConsumer]:
    """An :class:`EventConsumer` of ``topics`` (name → partitions when created) for ``group``, its
    topics and dead-letter topics ensured, its Kafka clients started; everything stopped on exit.

    A ``replica_id`` makes the consumer a static member of its group (KIP-345, ``group.instance.id``):
    restarted within the session timeout, it gets its partitions back without a rebalance on brokers
    that support it; a broker without JoinGroup v5 gets the older request without the id (aiokafka),
    i.e. ordinary dynamic membership."""
    await ensure_topics(bootstrap, {**topics, **{dlq_topic(topic, group): 1 for topic in topics}})
    producer = make_producer(bootstrap)
    consumer = make_consumer(
        bootstrap,
        *topics,
        group_id=group,
        group_instance_id=replica_id or None,
        session_timeout_ms=session_timeout * 1000,
        heartbeat_interval_ms=session_timeout * 1000 // 5,
    )
    await producer.start()
    try:
        await consumer.start()
        log.info("consumer.joined", group=group, static_member=replica_id or None)
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
