"""Reliable messaging under failure, on the real broker and database (issue: reliable messaging).

- the relay dies between Kafka's ack and marking the rows: the events are sent again, and
  the indexer's inbox makes the duplicates no-ops (the index is unchanged);
- the broker is down: events wait in the outbox and flow, all of them, once it is back;
- SIGTERM in the middle of a batch: the indexer finishes what it holds, commits and exits;
  after a restart nothing is lost and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from depot_common.consumer import EventConsumer
from depot_common.db import migrate
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentStored, encode
from depot_common.kafka import ensure_topics, make_consumer, make_producer
from depot_common.outbox import OutboxRelay, enqueue, outbox_ddl
from depot_common.relay_producer import make_relay_producer
from depot_devstack import servers
from depot_indexer.bootstrap import MIGRATIONS as SEARCH_MIGRATIONS
from depot_indexer.handlers import build_handlers
from depot_indexer.ports import BlobNotFound
from depot_upload.settings import UploadSettings
from tests.conftest import background
from tests.integration.test_outbox_relay import wait_all_marked
from tests.kafka_helpers import event_of, read_until
from tests.tcp_proxy import TcpProxy


class NoBlobs:
    async def read(self, key: str, max_bytes: int) -> bytes:
        raise BlobNotFound(key)


class NotStored:
    async def current(self, conn: Any, document_id: uuid.UUID) -> None:
        return None


def stored_event(document_id: uuid.UUID, n: int = 0) -> CloudEvent[DocumentStored]:
    data = DocumentStored(
        document_id=document_id,
        owner_id="relay-test",
        filename=f"doc-{n}.txt",
        content_type="text/plain",
        size_bytes=0,
        sha256="0" * 64,
        object_key=f"documents/{document_id}",
        version=2,
    )
    return CloudEvent[DocumentStored](source="test", type="document.stored", subject=str(document_id), data=data)


@pytest.fixture
async def scratch(pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[tuple[str, str]]:
    """A schema holding an outbox, a search index and its inbox, and a fresh topic: ``(schema, topic)``."""
    schema = f"msg_{secrets.token_hex(4)}"
    topic = f"test.{schema}"
    await pg_pool.execute(f"CREATE SCHEMA {schema}")
    await pg_pool.execute(outbox_ddl(schema))
    await ensure_topics([kafka_bootstrap], {topic: 3, f"{topic}.g.dlq": 1})
    yield schema, topic
    await pg_pool.execute(f"DROP SCHEMA {schema} CASCADE")


class DiesAfterAck(OutboxRelay):
    """A relay that dies (like a killed process) right after Kafka acknowledged its first batch."""

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        raise SystemExit("killed between the ack and the mark")


async def test_relay_killed_between_ack_and_mark_resends_and_the_index_is_unchanged(
    scratch: tuple[str, str], pg_pool: asyncpg.Pool, upload_settings: UploadSettings, kafka_bootstrap: str
) -> None:
    """Rows acked but not marked are sent again by the next relay; the indexer applies each event once."""
    schema, topic = scratch
    documents = [uuid.uuid4() for _ in range(20)]
    async with pg_pool.acquire() as conn, conn.transaction():
        for n, document_id in enumerate(documents):
            await enqueue(conn, schema, topic=topic, key=str(document_id), event=stored_event(document_id, n))
    producer = make_relay_producer(upload_settings.kafka_servers)
    await producer.start()
    try:
        with pytest.raises(SystemExit):
            await DiesAfterAck(dsn=upload_settings.database_url, schema=schema, producer=producer).run()
        assert await pg_pool.fetchval(f"SELECT count(*) FROM {schema}.outbox") == 20
        async with background(OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer).run()):
            await wait_all_marked(pg_pool, schema)
    finally:
        await producer.stop()
    records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 40)
    assert len(records) == 40, "every event was delivered twice"

    # the indexer's handlers and inbox, over that topic, into this schema
    await migrate(pg_pool, "search", SEARCH_MIGRATIONS)
    group = f"g-{schema}"
    consumer = make_consumer([kafka_bootstrap], topic, group_id=group, session_timeout_ms=2000)
    producer = make_producer([kafka_bootstrap])
    await asyncio.gather(consumer.start(), producer.start())

    def duplicates() -> float:
        return REGISTRY.get_sample_value("depot_consumer_events_total", {"group": group, "outcome": "duplicate"}) or 0

    events = EventConsumer(
        consumer=consumer,
        producer=producer,
        pool=pg_pool,
        schema="search",
        group=group,
        handlers=build_handlers(NoBlobs(), NotStored(), max_object_bytes=1024, max_text_chars=1000),
    )
    try:
        async with background(events.run()):
            for _ in range(200):
                if duplicates() >= 20:
                    break
                await asyncio.sleep(0.05)
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
    assert duplicates() == 20
    rows = await pg_pool.fetch(
        "SELECT version, count(*) OVER () AS n FROM search.index_entries WHERE document_id = ANY($1::uuid[])", documents
    )
    assert len(rows) == 20
    assert {row["version"] for row in rows} == {2}


def publish_errors(schema: str) -> float:
    """``depot_outbox_errors_total`` of ``schema``: publish attempts the relay saw fail."""
    return REGISTRY.get_sample_value("depot_outbox_errors_total", {"schema": schema}) or 0


async def put(pool: asyncpg.Pool, schema: str, topic: str, keys: list[str], numbers: range) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for n in numbers:
            key = keys[n % len(keys)]
            event = stored_event(uuid.uuid4(), n)
            await enqueue(conn, schema, topic=topic, key=key, event=event)


async def test_events_written_while_the_broker_is_unreachable_flow_after_it_returns(
    scratch: tuple[str, str], pg_pool: asyncpg.Pool, upload_settings: UploadSettings, tmp_path: Path
) -> None:
    """With the broker cut off, events wait in the outbox; once it is reachable again every one is published,
    in order per key, and none twice."""
    schema, topic = scratch
    proxy = TcpProxy(servers.free_port(), servers.free_port())
    broker, bootstrap = servers.start_tansu(tmp_path, proxy.target_port, advertised_port=proxy.listen_port)
    await proxy.start()
    producer = make_relay_producer(
        [bootstrap], **{"message.timeout.ms": 3000, "retry.backoff.ms": 200, "topic.metadata.refresh.interval.ms": 1000}
    )
    relay = OutboxRelay(dsn=upload_settings.database_url, schema=schema, producer=producer, poll_interval=0.2)
    keys = ["a", "b", "c"]
    try:
        await ensure_topics([bootstrap], {topic: 3})
        await producer.start()
        async with background(relay.run()):
            await put(pg_pool, schema, topic, keys, range(0, 6))
            await wait_all_marked(pg_pool, schema)
            await proxy.cut()
            errors_before = publish_errors(schema)
            await put(pg_pool, schema, topic, keys, range(6, 36))
            for _ in range(300):  # the relay tries, and fails, at least twice
                if publish_errors(schema) >= errors_before + 2:
                    break
                await asyncio.sleep(0.1)
            assert publish_errors(schema) >= errors_before + 2, "the relay tried to publish while the broker was away"
            unpublished = f"SELECT count(*) FROM {schema}.outbox"
            assert await pg_pool.fetchval(unpublished) == 30, "nothing is marked while the broker is unreachable"
            await proxy.start()
            await wait_all_marked(pg_pool, schema, timeout=60)
        records = await read_until(bootstrap, topic, lambda rs: len(rs) >= 36, timeout=20)
    finally:
        await producer.stop()
        await proxy.cut()
        broker.stop()
    for key in keys:
        sent = [f"doc-{n}.txt" for n in range(36) if keys[n % 3] == key]
        assert [event_of(r)["data"]["filename"] for r in records if r.key == key.encode()] == sent
    assert len(records) == 36


def indexer_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "depot_indexer", "consume"], env=env, stdout=sink, stderr=sink)


async def test_sigterm_mid_batch_commits_what_was_applied_and_loses_nothing(
    stack_env: dict[str, str],
    postgres_admin_url: str,
    upload_settings: UploadSettings,
    tmp_path: Path,
    upload_api: str,
) -> None:
    """SIGTERM while a backlog is certainly being indexed (one partition is held on a row lock): the indexer exits
    0 promptly having committed what it applied; restarted, it indexes the rest, and no event is applied twice."""
    name = f"depot_sigterm_{secrets.token_hex(4)}"
    database = await asyncio.to_thread(servers.recreate_database, postgres_admin_url, name)
    group = f"sigterm-{secrets.token_hex(4)}"
    env = {
        **os.environ,
        **stack_env,
        "DEPOT_DATABASE_URL": database,
        "DEPOT_CONSUMER_GROUP": group,
        "DEPOT_CONSUMER_SESSION_TIMEOUT": "2",
        "DEPOT_LOG_FORMAT": "json",
    }
    documents = [uuid.uuid4() for _ in range(600)]  # one partition is held, so the backlog need not be long
    events = [stored_event(d, n) for n, d in enumerate(documents)]
    producer = make_producer(upload_settings.kafka_servers, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(DOCUMENTS_TOPIC, value=encode(event), key=str(event.subject).encode())
            for event in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    pool = await asyncpg.create_pool(database, min_size=1, max_size=3)
    assert pool is not None
    held = documents[0]  # the first of ours in its partition: ~250 of ours follow it there
    holder = await pool.acquire()
    try:
        await migrate(pool, "search", SEARCH_MIGRATIONS)
        await pool.execute(
            "INSERT INTO search.index_entries (document_id, owner_id, version, status, indexed_at)"
            " VALUES ($1, 'relay-test', 1, 'removed', now())",
            held,
        )
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM search.index_entries WHERE document_id = $1 FOR UPDATE", held)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )

        async def indexed() -> int:
            try:
                return int(
                    await pool.fetchval(
                        "SELECT count(*) FROM search.index_entries WHERE document_id = ANY($1::uuid[])", documents
                    )
                )
            except asyncpg.UndefinedTableError:
                return 0

        first = indexer_process(env, tmp_path / "first.log")
        while (done := await indexed()) < 50 or not await pool.fetchval(waiting):
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        await lock.rollback()  # the held event completes; its partition then stops behind it
        assert await asyncio.to_thread(first.wait, 15) == 0
        at_exit = await indexed()
        assert at_exit < len(documents), "the signal arrived mid-backlog"
        assert at_exit >= done

        second = indexer_process(env, tmp_path / "second.log")
        try:
            for _ in range(600):
                if await indexed() == len(documents):
                    break
                await asyncio.sleep(0.05)
            assert await indexed() == len(documents), "nothing lost"
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 15)
    finally:
        await pool.release(holder)
        await pool.close()
        await asyncio.to_thread(servers.drop_database, postgres_admin_url, name)
    first_lines = [json.loads(line) for line in (tmp_path / "first.log").read_text().splitlines() if line[:1] == "{"]
    assert [line.get("event_id") for line in first_lines if line["event"] == "consumer.applied"].count(
        str(events[0].id)
    ) == 1, "the held event was applied by the first process, after the signal"
    lines = [json.loads(line) for line in (tmp_path / "second.log").read_text().splitlines() if line.startswith("{")]
    ours = {str(event.id) for event in events}
    redelivered = [line for line in lines if line["event"] == "consumer.duplicate" and line.get("event_id") in ours]
    assert redelivered == [], "everything the first process applied was committed before it exited"
    applied = [line for line in lines if line["event"] == "consumer.applied" and line.get("event_id") in ours]
    assert len(applied) == len(documents) - at_exit


async def test_workers_serve_health_readiness_and_metrics(
    stack_env: dict[str, str], upload_api: str, tmp_path: Path
) -> None:
    """The relay and the indexer consumer answer /healthz, /readyz and /metrics (backlog, lag) on DEPOT_OPS_PORT,
    and still stop cleanly on SIGTERM; the consumer is ready once it works (its own "worker" check)."""
    import httpx

    dependencies = {"postgres": True, "s3": True, "kafka": True}
    for module, command, metric, ready in (
        ("depot_upload", "relay", "depot_outbox_relay_active", dependencies),
        ("depot_indexer", "consume", "depot_consumer_events_total", {**dependencies, "worker": True}),
    ):
        port = servers.free_port()
        env = {**os.environ, **stack_env, "DEPOT_OPS_PORT": str(port), "DEPOT_CONSUMER_GROUP": f"ops-{port}"}
        with (tmp_path / f"{command}.log").open("ab") as sink:
            process = subprocess.Popen([sys.executable, "-m", module, command], env=env, stdout=sink, stderr=sink)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                for _ in range(200):
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                for _ in range(300):  # a consumer is ready once it joined its group
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await http.get("/readyz")).json()["checks"] == ready
                for _ in range(100):
                    if metric in (await http.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.1)
                assert metric in (await http.get("/metrics")).text
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 15) == 0, (tmp_path / f"{command}.log").read_text()
            assert "Traceback" not in (tmp_path / f"{command}.log").read_text(), "a clean stop logs no error"
