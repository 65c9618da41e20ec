"""The outbox relay against real PostgreSQL and a Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from depot_common.events import DOCUMENTS_TOPIC, CloudEvent
from depot_common.kafka import ensure_topics, make_producer
from depot_common.outbox import OutboxRelay, enqueue, outbox_ddl
from depot_upload.settings import UploadSettings
from tests.conftest import background
from tests.kafka_helpers import event_of, read_until, with_subject
from tests.upload_helpers import unique_text, upload

Auth = Callable[..., dict[str, str]]


class Ping(BaseModel):
    n: int


async def test_stored_upload_is_published_as_a_cloudevent(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    relay: OutboxRelay,
    kafka_bootstrap: str,
    pg_pool: asyncpg.Pool,
) -> None:
    """An upload's document.stored event reaches Kafka keyed by document id, with traceparent; then it is marked
    published."""
    trace_id = uuid.uuid4().hex
    headers = {**auth("alice"), "traceparent": f"00-{trace_id}-{'1' * 16}-01"}
    document = (await upload(http, upload_api, headers, unique_text("relay"))).json()
    records = await read_until(kafka_bootstrap, DOCUMENTS_TOPIC, with_subject(document["id"]))
    [record] = [r for r in records if event_of(r)["subject"] == document["id"]]
    event = event_of(record)
    assert record.key == document["id"].encode()
    assert event["type"] == "document.stored"
    assert event["source"] == "depot/upload-api"
    assert event["data"]["document_id"] == document["id"]
    record_headers = dict(record.headers)
    assert record_headers["content-type"] == b"application/cloudevents+json"
    assert record_headers["traceparent"].decode().split("-")[1] == trace_id
    published = None
    for _ in range(50):
        published = await pg_pool.fetchval("SELECT published_at FROM upload.outbox WHERE key = $1", document["id"])
        if published is not None:
            break
        await asyncio.sleep(0.1)
    assert published is not None


@pytest.fixture
async def scratch_outbox(pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[tuple[str, str]]:
    """A schema with its own outbox table and a fresh topic: ``(schema, topic)``."""
    schema = f"relay_{secrets.token_hex(4)}"
    topic = f"test.relay.{schema}"
    await pg_pool.execute(f"CREATE SCHEMA {schema}")
    await pg_pool.execute(outbox_ddl(schema))
    await ensure_topics([kafka_bootstrap], {topic: 3})
    yield schema, topic
    await pg_pool.execute(f"DROP SCHEMA {schema} CASCADE")


async def put_events(pool: asyncpg.Pool, schema: str, topic: str, key: str, numbers: range) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for n in numbers:
            event = CloudEvent[Ping](source="test", type="test.ping", subject=key, data=Ping(n=n))
            await enqueue(conn, schema, topic=topic, key=key, event=event)


async def test_one_relay_is_active_and_a_standby_takes_over(
    scratch_outbox: tuple[str, str],
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
    kafka_bootstrap: str,
) -> None:
    """Of two relays only one publishes; when it dies the standby takes over within 10 s and nothing is lost."""
    schema, topic = scratch_outbox
    producer = make_producer(upload_settings.kafka_servers)
    await producer.start()
    relays = [
        OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer, poll_interval=0.2)
        for _ in range(2)
    ]
    try:
        async with background(relays[0].run()) as first:
            await asyncio.wait_for(relays[0].active.wait(), 5)
            async with background(relays[1].run()):
                await put_events(pg_pool, schema, topic, "doc-1", range(0, 10))
                await asyncio.sleep(1)
                assert relays[0].active.is_set()
                assert not relays[1].active.is_set()
                first.cancel()  # the active relay dies (its connection, and lock, go with it)
                await put_events(pg_pool, schema, topic, "doc-1", range(10, 20))
                await asyncio.wait_for(relays[1].active.wait(), 10)
                records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 20, timeout=10)
                await wait_all_marked(pg_pool, schema)
    finally:
        await producer.stop()
    numbers = [event_of(record)["data"]["n"] for record in records]
    assert numbers == list(range(20)), "per-key order is kept across the takeover, nothing lost or doubled"


async def wait_all_marked(pool: asyncpg.Pool, schema: str, timeout: float = 5) -> None:
    """Wait until every outbox row of ``schema`` is marked published."""
    for _ in range(int(timeout / 0.05)):
        if not await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("outbox rows left unpublished")


async def test_relay_publishes_a_backlog_in_order(
    scratch_outbox: tuple[str, str],
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
    kafka_bootstrap: str,
) -> None:
    """Events written while no relay runs are all published, per key in commit order, once a relay starts."""
    schema, topic = scratch_outbox
    for key in ("a", "b", "c"):
        await put_events(pg_pool, schema, topic, key, range(300))
    producer = make_producer(upload_settings.kafka_servers)
    await producer.start()
    relay = OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer, batch_size=128)
    try:
        async with background(relay.run()):
            records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 900, timeout=20)
    finally:
        await producer.stop()
    for key in ("a", "b", "c"):
        numbers = [event_of(r)["data"]["n"] for r in records if r.key == key.encode()]
        assert numbers == list(range(300))


async def test_published_rows_are_purged_after_the_retention(
    scratch_outbox: tuple[str, str], pg_pool: asyncpg.Pool, upload_settings: UploadSettings
) -> None:
    """Rows published longer ago than the retention are deleted; unpublished and recent ones stay."""
    schema, topic = scratch_outbox
    await put_events(pg_pool, schema, topic, "k", range(6))
    await pg_pool.execute(f"UPDATE {schema}.outbox SET published_at = now() - interval '2 hours' WHERE id % 3 = 0")
    await pg_pool.execute(f"UPDATE {schema}.outbox SET published_at = now() WHERE id % 3 = 1")
    relay = OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=None, retention_seconds=3600)  # type: ignore[arg-type]
    async with pg_pool.acquire() as conn:
        await relay.purge_published(conn)  # type: ignore[arg-type]
    remaining = await pg_pool.fetch(f"SELECT id % 3 AS kind FROM {schema}.outbox")
    assert sorted(row["kind"] for row in remaining) == [1, 1, 2, 2]
