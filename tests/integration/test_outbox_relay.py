"""The outbox relay against real PostgreSQL and a Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from depot_common.db import create_pool
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent
from depot_common.kafka import ensure_topics
from depot_common.outbox import OutboxRelay, enqueue, outbox_ddl, outbox_upgrade_ddl
from depot_common.relay_producer import make_relay_producer
from depot_devstack import servers
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
    """An upload's document.stored event reaches Kafka keyed by document id, with traceparent; then its outbox row
    is deleted (published)."""
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
    for _ in range(50):
        if not await pg_pool.fetchval("SELECT count(*) FROM upload.outbox WHERE key = $1", document["id"]):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the published event's outbox row is still there")


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


def relay_metric(http: httpx.Client, port: int, name: str) -> float:
    """``name{schema="upload"}`` on a relay process's /metrics (0 while the series does not exist yet)."""
    for line in http.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith(f'{name}{{schema="upload"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_killed_relay_process_is_replaced_by_the_standby(
    stack_env: dict[str, str], postgres_admin_url: str, tmp_path: Path
) -> None:
    """Of two `depot-upload relay` processes only the first publishes; SIGKILLed, it is replaced within 10 s by the
    standby, which publishes every event that follows, in order, nothing lost."""
    name = f"depot_relay_{secrets.token_hex(4)}"
    database = await asyncio.to_thread(servers.recreate_database, postgres_admin_url, name)
    broker, bootstrap = servers.start_tansu(tmp_path)  # its own broker: no session consumer sees these events
    ports = [servers.free_port(), servers.free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    http = httpx.Client(timeout=5)

    def start_relay(port: int) -> None:
        env = {
            **os.environ,
            **stack_env,
            "DEPOT_DATABASE_URL": database,
            "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
            "DEPOT_OPS_PORT": str(port),
            "DEPOT_RELAY_POLL_INTERVAL": "1",
        }
        with (tmp_path / f"relay-{port}.log").open("ab") as sink:
            command = [sys.executable, "-m", "depot_upload", "relay"]
            processes.append(subprocess.Popen(command, env=env, stdout=sink, stderr=sink))

    def reports(port: int, active: float) -> bool:
        try:
            text = http.get(f"http://127.0.0.1:{port}/metrics").text
        except httpx.TransportError:
            return False
        return f'depot_outbox_relay_active{{schema="upload"}} {active}' in text

    def published(port: int) -> float:
        return relay_metric(http, port, "depot_outbox_published_total")

    first, second = ports
    try:
        try:
            await takeover(start_relay, reports, published, first, second, database, processes)
        except AssertionError as error:
            logs = "\n".join(path.read_text() for path in sorted(tmp_path.glob("relay-*.log")))
            raise AssertionError(f"{error}\n--- relay logs ---\n{logs[-6000:]}") from error
        records = await read_until(bootstrap, DOCUMENTS_TOPIC, lambda rs: len(rs) >= 20, timeout=20)
    finally:
        http.close()
        for process in processes:
            if process.poll() is None:
                process.terminate()
                await asyncio.to_thread(process.wait, 15)
        broker.stop()
        await asyncio.to_thread(servers.drop_database, postgres_admin_url, name)
    numbers = [event_of(record)["data"]["n"] for record in records]
    assert numbers == list(range(20)), "per-key order is kept across the takeover, nothing lost or doubled"


async def takeover(
    start_relay: Callable[[int], None],
    reports: Callable[[int, float], bool],
    published: Callable[[int], float],
    first: int,
    second: int,
    database: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """Start two relays, publish, SIGKILL the active one, publish again: the checks of the test above."""
    pool = None
    try:
        start_relay(first)
        await wait_for(lambda: reports(first, 1.0), 60, "the first relay became active")
        start_relay(second)
        await wait_for(lambda: reports(second, 0.0), 60, "the second relay waits as a standby")
        pool = await create_pool(database, max_size=2)
        await put_events(pool, "upload", DOCUMENTS_TOPIC, "doc-1", range(0, 10))
        await wait_all_marked(pool, "upload", timeout=20)
        assert (published(first), published(second)) == (10, 0), "only the active relay publishes"

        processes[0].kill()  # SIGKILL: no clean close; its connection, and lock, die with it
        assert await asyncio.to_thread(processes[0].wait, 10) == -signal.SIGKILL
        await put_events(pool, "upload", DOCUMENTS_TOPIC, "doc-1", range(10, 20))
        await wait_for(lambda: reports(second, 1.0), 10, "the standby took over within 10 s")
        await wait_all_marked(pool, "upload", timeout=20)
        assert published(second) == 10, "the standby published every event after the kill"
    finally:
        if pool is not None:
            await pool.close()


async def wait_all_marked(pool: asyncpg.Pool, schema: str, timeout: float = 5) -> None:
    """Wait until every outbox row of ``schema`` is published (deleted)."""
    for _ in range(int(timeout / 0.05)):
        if not await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox"):
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
    producer = make_relay_producer(upload_settings.kafka_servers)
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


#: The outbox as the first migrations created it (jsonb columns, a ``published_at`` that stayed NULL).
FIRST_SHAPE = (
    "CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, topic text NOT NULL,"
    " key text NOT NULL, value jsonb NOT NULL, headers jsonb NOT NULL DEFAULT '{{}}',"
    " created_at timestamptz NOT NULL DEFAULT clock_timestamp(), published_at timestamptz);"
    " CREATE INDEX outbox_unpublished ON {schema}.outbox (id) WHERE published_at IS NULL"
)


async def test_an_outbox_of_the_first_shape_is_upgraded_and_its_backlog_published_unchanged(
    pg_pool: asyncpg.Pool, kafka_bootstrap: str, upload_settings: UploadSettings
) -> None:
    """``outbox_upgrade_ddl`` turns a jsonb outbox with ``published_at`` into ``outbox_ddl``'s shape, keeping the
    unpublished rows, which the relay then publishes with the same JSON; run again, it changes nothing."""
    schema = f"relay_{secrets.token_hex(4)}"
    topic = f"test.relay.{schema}"
    columns = (
        "SELECT column_name, data_type, column_default FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'outbox' ORDER BY column_name"
    )
    await pg_pool.execute(f"CREATE SCHEMA {schema}")
    try:
        await pg_pool.execute(outbox_ddl(schema))
        expected = [tuple(row) for row in await pg_pool.fetch(columns, schema)]
        await pg_pool.execute(f"DROP TABLE {schema}.outbox")
        await pg_pool.execute(FIRST_SHAPE.format(schema=schema))
        await ensure_topics([kafka_bootstrap], {topic: 3})
        await put_events(pg_pool, schema, topic, "k", range(5))
        before = [
            event["data"]["n"]
            for event in await pg_pool.fetchval(f"SELECT array_agg(value ORDER BY id) FROM {schema}.outbox")
        ]
        for _ in range(2):
            await pg_pool.execute(outbox_upgrade_ddl(schema))
            assert [tuple(row) for row in await pg_pool.fetch(columns, schema)] == expected
        indexes = await pg_pool.fetchval("SELECT count(*) FROM pg_indexes WHERE schemaname = $1", schema)
        assert indexes == 2, "the partial index on published_at is gone; the primary key and event_id stay"
        assert await pg_pool.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 5
        producer = make_relay_producer(upload_settings.kafka_servers)
        await producer.start()
        relay = OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer)
        try:
            async with background(relay.run()):
                records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 5, timeout=20)
                await wait_all_marked(pg_pool, schema)
        finally:
            await producer.stop()
        assert before == list(range(5))
        assert [event_of(r)["data"]["n"] for r in records] == before
    finally:
        await pg_pool.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_an_event_committed_late_below_the_batch_in_flight_is_published_before_later_ones_of_its_key(
    scratch_outbox: tuple[str, str],
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
    kafka_bootstrap: str,
) -> None:
    """A transaction that took its outbox id first and commits after the relay published higher ids, while it
    still works through a backlog, is published, and before the later events of its key."""
    schema, topic = scratch_outbox
    held = await pg_pool.acquire()
    tx = held.transaction()
    await tx.start()
    late = CloudEvent[Ping](source="test", type="test.ping", subject="late", data=Ping(n=0))
    await enqueue(held, schema, topic=topic, key="late", event=late)  # takes an id, not visible yet
    await put_events(pg_pool, schema, topic, "other", range(3000))  # ids above it, committed
    producer = make_relay_producer(upload_settings.kafka_servers)
    await producer.start()
    relay = OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer, batch_size=50)
    try:
        async with background(relay.run()):
            await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 100, timeout=20)
            await tx.commit()  # while later batches of "other" are being read and sent
            await put_events(pg_pool, schema, topic, "late", range(1, 3))
            records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 3003, timeout=30)
            await wait_all_marked(pg_pool, schema)
    finally:
        await producer.stop()
        await pg_pool.release(held)
    assert [event_of(r)["data"]["n"] for r in records if r.key == b"late"] == [0, 1, 2]
    assert [event_of(r)["data"]["n"] for r in records if r.key == b"other"] == list(range(3000))
