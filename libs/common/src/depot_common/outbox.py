"""Transactional outbox: write events with the state change, publish them afterwards.

``enqueue`` inserts an event into ``<schema>.outbox`` on the caller's connection, inside
the caller's transaction, and notifies the relay (PostgreSQL delivers the notification at
commit). :class:`OutboxRelay` publishes the rows in id order with ``acks="all"`` and
deletes them only after every ack (a published event is no longer in the table; Kafka has
it): a crash in between re-sends, which the idempotent consumers absorb. Every row in the
table is unpublished (deleting costs PostgreSQL a third of marking a row published with an
``UPDATE``). While Kafka acks one batch, the relay deletes the one before and reads the next.
One relay per schema is active at a time (advisory lock on a dedicated connection); the
others wait as standbys and take over when it goes away.

The table each owner creates in its own schema is :func:`outbox_ddl`; :func:`outbox_upgrade_ddl`
migrates one of the first shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from opentelemetry.trace import Span, StatusCode
from prometheus_client import Counter, Gauge

from depot_common import tracing
from depot_common.db import Connection, advisory_key, identifier, init_connection
from depot_common.events.envelope import CONTENT_TYPE, CloudEvent
from depot_common.faults import CrashPoints

if TYPE_CHECKING:  # librdkafka is loaded by relay processes only (depot_common.relay_process)
    from depot_common.relay_producer import Headers, RelayProducer

log = structlog.get_logger(__name__)

PUBLISHED = Counter("depot_outbox_published_total", "Outbox events published", ["schema"])
ERRORS = Counter("depot_outbox_errors_total", "Outbox publish attempts that failed", ["schema"])
BACKLOG = Gauge("depot_outbox_backlog", "Unpublished outbox events", ["schema"])
OLDEST = Gauge("depot_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished event", ["schema"])
ACTIVE = Gauge("depot_outbox_relay_active", "1 while this relay holds the lock", ["schema"])


def outbox_ddl(schema: str) -> str:
    """The outbox table an owner creates in ``schema``: every row in it is unpublished (the relay deletes
    a row once Kafka acknowledged it). ``value`` and ``headers`` are ``json``: stored as written and read
    back as text, which costs PostgreSQL a quarter of ``jsonb``'s re-serialisation on every publish."""
    schema = identifier(schema)
    return (
        f"CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,"
        " topic text NOT NULL, key text NOT NULL, value json NOT NULL, headers json NOT NULL DEFAULT '{}',"
        " created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )


def outbox_upgrade_ddl(schema: str) -> str:
    """Brings an outbox of the first shape (``jsonb`` columns, a ``published_at`` that stayed NULL since the
    relay deletes what it published, and a partial index on it) to :func:`outbox_ddl`'s; a no-op on one of
    that shape already."""
    schema = identifier(schema)
    return (
        f"ALTER TABLE {schema}.outbox DROP COLUMN IF EXISTS published_at;"  # drops the partial index with it
        f" ALTER TABLE {schema}.outbox ALTER COLUMN headers DROP DEFAULT;"
        f" ALTER TABLE {schema}.outbox ALTER COLUMN value TYPE json USING value::json,"
        " ALTER COLUMN headers TYPE json USING headers::json;"
        f" ALTER TABLE {schema}.outbox ALTER COLUMN headers SET DEFAULT '{{}}'"
    )


def channel(schema: str) -> str:
    return f"depot_outbox_{identifier(schema)}"


def outbox_row(*, topic: str, key: str, event: CloudEvent[Any]) -> tuple[Any, ...]:
    """``(event_id, topic, key, value, headers)``: the outbox row of ``event``, as :func:`enqueue` writes it
    (for an owner that writes it within a statement of its own)."""
    headers = {
        "content-type": CONTENT_TYPE,
        "traceparent": tracing.current_traceparent() or tracing.new_traceparent(),
    }
    return event.id, topic, key, event.model_dump(mode="json"), headers


async def enqueue(conn: Connection, schema: str, *, topic: str, key: str, event: CloudEvent[Any]) -> None:
    """Insert ``event`` into ``schema``'s outbox in the caller's transaction."""
    schema = identifier(schema)
    # one round trip: the row and the notification (delivered at commit) in one statement
    await conn.execute(
        f"WITH queued AS (INSERT INTO {schema}.outbox (event_id, topic, key, value, headers)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING 1) SELECT pg_notify($6, '') FROM queued",
        *outbox_row(topic=topic, key=key, event=event),
        channel(schema),
    )


async def backlog(conn: Connection, schema: str) -> tuple[int, float]:
    """``(unpublished events, age in seconds of the oldest)`` of ``schema``'s outbox."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        f" FROM {identifier(schema)}.outbox"
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


def _traced(stored: Headers, traceparent: str | None) -> Headers:
    """The stored headers, the ``traceparent`` naming the relay's publish span (the stored one when not traced)."""
    return {**stored, "traceparent": traceparent} if traceparent else stored


@dataclass(frozen=True, slots=True)
class _Sending:
    """A batch handed to the producer: its row ids, publish spans, and the acks to wait for."""

    ids: list[int]
    spans: list[Span]
    delivery: asyncio.Future[None]


class OutboxRelay:
    """Publishes ``schema``'s outbox to Kafka; run one or more per database."""

    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        producer: RelayProducer,
        batch_size: int = 2000,
        poll_interval: float = 1.0,
        crash_points: CrashPoints | None = None,
    ) -> None:
        self._crash = crash_points or CrashPoints()
        self.schema = identifier(schema)
        self._dsn = dsn
        self._producer = producer
        self._batch_size = batch_size
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self.active = asyncio.Event()
        """Set while this relay holds the lock and publishes."""

    async def run(self) -> None:
        """Wait for the lock, then publish until cancelled; reconnect on database errors."""
        while True:
            try:
                await self._run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("outbox.relay.db_error", schema=self.schema, error=str(error))
                await asyncio.sleep(self._poll)

    async def _run_once(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            await init_connection(conn)
            key = advisory_key(f"outbox-relay:{self.schema}")
            ACTIVE.labels(self.schema).set(0)  # a standby until it holds the lock
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):  # noqa: ASYNC110 - standby polls the lock
                await asyncio.sleep(self._poll)
            ACTIVE.labels(self.schema).set(1)
            self.active.set()
            log.info("outbox.relay.active", schema=self.schema)
            await conn.add_listener(channel(self.schema), lambda *_: self._wake.set())
            await self._pump(conn)
        finally:
            ACTIVE.labels(self.schema).set(0)
            self.active.clear()
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    async def _pump(self, conn: asyncpg.Connection) -> None:
        """Publish batch after batch, one in flight: while Kafka acks batch k, delete batch k-1 (acked) and read
        batch k+1; batch k+1 is sent once batch k is acked, so a failed batch is re-sent before anything after it."""
        sending: _Sending | None = None
        try:
            while True:
                self._wake.clear()
                rows = await self._fetch(conn, exclude=sending.ids if sending else [])
                acked: _Sending | None = None
                if sending is not None:
                    acked, sending = sending, None
                    if not await self._acked(acked):  # broker outage: rows stay unpublished and are retried
                        await asyncio.sleep(self._poll)
                        continue
                    self._crash.reached("after_send", schema=self.schema, batch=len(acked.ids))
                if rows:
                    sending = self._send(rows)
                if acked is not None:
                    await self._mark_published(conn, acked.ids)
                    PUBLISHED.labels(self.schema).inc(len(acked.ids))
                    log.debug("outbox.published", schema=self.schema, count=len(acked.ids))
                if sending is None:
                    count, age = await backlog(conn, self.schema)
                    BACKLOG.labels(self.schema).set(count)
                    OLDEST.labels(self.schema).set(age)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            if sending is not None:  # its rows stay unpublished: whoever holds the lock next re-sends them
                sending.delivery.cancel()
                for span in sending.spans:
                    span.end()

    async def _fetch(self, conn: asyncpg.Connection, *, exclude: list[int]) -> list[asyncpg.Record]:
        """The next unpublished batch in id order, but for ``exclude`` (the batch in flight: sent, not yet
        deleted, its ids ascending). A row above the last of them is no row of it: only the rows up to it are
        compared with the list (a late commit below it is still found)."""
        return await conn.fetch(
            f"SELECT id, topic, key, value::text AS value, headers FROM {self.schema}.outbox"
            " WHERE id > $2 OR id <> ALL($3::bigint[]) ORDER BY id LIMIT $1",
            self._batch_size,
            exclude[-1] if exclude else 0,
            exclude,
        )

    def _send(self, rows: list[asyncpg.Record]) -> _Sending:
        """Hand ``rows`` to the producer, each in a publish span (when tracing is on) whose traceparent it carries.

        A record is the row as stored: its JSON text as the value, its headers (``content-type``,
        ``traceparent``) as they were written, but for the traceparent of the publish span when traced.
        """
        if tracing.enabled():
            spans = [tracing.start_publish(row["topic"], row["key"], row["headers"].get("traceparent")) for row in rows]
            records = [
                (row["topic"], row["key"], row["value"], _traced(row["headers"], tracing.traceparent_of(span)))
                for row, span in zip(rows, spans, strict=True)
            ]
        else:  # no-op spans would carry the stored traceparent unchanged: skip making them
            spans = []
            records = [(row["topic"], row["key"], row["value"], row["headers"]) for row in rows]
        delivery = asyncio.ensure_future(self._producer.send(records))
        return _Sending([row["id"] for row in rows], spans, delivery)

    async def _acked(self, sending: _Sending) -> bool:
        """Wait until every record of ``sending`` is acknowledged (True) or one failed (False: logged, counted)."""
        try:
            await sending.delivery
        except Exception as error:
            for span in sending.spans:
                span.record_exception(error)
                span.set_status(StatusCode.ERROR, type(error).__name__)
                span.end()
            ERRORS.labels(self.schema).inc()
            log.warning("outbox.publish.failed", schema=self.schema, batch=len(sending.ids), error=repr(error))
            return False
        for span in sending.spans:
            span.end()
        return True

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        """Delete acknowledged rows; dying before this re-sends them (consumers are idempotent)."""
        await conn.execute(f"DELETE FROM {self.schema}.outbox WHERE id = ANY($1::bigint[])", ids)
