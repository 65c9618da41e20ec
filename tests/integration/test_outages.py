"""Outages are waited out (issue 12): a dependency that is down never dead-letters a valid event, never
answers 500, never crashes a consumer, and readiness tells the truth — on real servers we crash and pause.

- a private PostgreSQL cluster crashed (``pg_ctl stop -m immediate``) and restarted while the indexer
  works through a backlog, and while clients upload;
- a moto S3 server of the test's own, stopped (SIGSTOP) for 30 s while the indexer reads objects;
- a moto S3 server of the test's own, stopped (SIGSTOP) then gone (port closed) under the upload API's PUT;
- a tansu broker of the test's own, stopped, while /readyz is asked;
- a second consumer joining and leaving the group while the first one works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from depot_common.consumer import EventConsumer, dlq_topic, inbox_ddl
from depot_common.db import create_pool, migrate
from depot_common.events import CloudEvent, DocumentStored, encode
from depot_common.health import WorkerReadiness
from depot_common.kafka import ensure_topics, make_consumer, make_producer
from depot_common.ops import ops_app
from depot_common.s3 import object_store, s3_client
from depot_devstack import servers
from depot_indexer.bootstrap import MIGRATIONS as SEARCH_MIGRATIONS
from depot_indexer.handlers import build_handlers
from depot_indexer.settings import IndexerSettings
from depot_indexer.storage import S3BlobReader
from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import background, serve
from tests.kafka_helpers import read_until
from tests.private_postgres import PrivateCluster
from tests.processes import api_process


class NoBlobs:
    async def read(self, key: str, max_bytes: int) -> bytes:
        raise AssertionError("size 0 documents are never read")


class NotStored:
    async def current(self, conn: Any, document_id: uuid.UUID) -> None:
        return None


def stored(document_id: uuid.UUID, *, size: int = 0, key: str = "") -> CloudEvent[DocumentStored]:
    data = DocumentStored(
        document_id=document_id,
        owner_id="outage-test",
        filename=f"{document_id}.txt",
        content_type="text/plain",
        size_bytes=size,
        sha256="0" * 64,
        object_key=key or f"documents/{document_id}",
        version=2,
    )
    return CloudEvent[DocumentStored](source="test", type="document.stored", subject=str(document_id), data=data)


def outcome(group: str, name: str) -> float:
    return REGISTRY.get_sample_value("depot_consumer_events_total", {"group": group, "outcome": name}) or 0


def paused(group: str, dependency: str) -> float:
    return (
        REGISTRY.get_sample_value("depot_consumer_paused_partitions", {"group": group, "dependency": dependency}) or 0
    )


async def publish(bootstrap: str, topic: str, events: list[CloudEvent[DocumentStored]]) -> None:
    producer = make_producer([bootstrap], linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=encode(e), key=str(e.subject).encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def indexing(
    bootstrap: str, topic: str, group: str, pool: asyncpg.Pool, blobs: Any
) -> AsyncIterator[EventConsumer]:
    """The indexer's handlers and inbox (schema ``search`` of ``pool``) consuming ``topic`` as ``group``."""
    consumer = make_consumer([bootstrap], topic, group_id=group, session_timeout_ms=6000)
    producer = make_producer([bootstrap])
    await asyncio.gather(consumer.start(), producer.start())
    events = EventConsumer(
        consumer=consumer,
        producer=producer,
        pool=pool,
        schema="search",
        group=group,
        handlers=build_handlers(blobs, NotStored(), max_object_bytes=1 << 20, max_text_chars=10_000),
    )
    try:
        async with background(events.run()) as task:
            yield events
            assert not task.done(), "the consumer is still running"
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


async def count_indexed(pool: asyncpg.Pool, documents: list[uuid.UUID]) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM search.index_entries WHERE document_id = ANY($1::uuid[])", documents)
    )


async def dead_letters(bootstrap: str, topic: str, group: str) -> int:
    return len(await read_until(bootstrap, dlq_topic(topic, group), lambda rs: False, timeout=1.5))


# --- PostgreSQL crashed and restarted ------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this module's own, which its tests crash and restart."""
    private = PrivateCluster(tmp_path_factory.mktemp("crash-pg"))
    try:
        yield private
    finally:
        private.stop()


async def crash_for(cluster: PrivateCluster, seconds: float) -> None:
    await asyncio.to_thread(cluster.crash)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(cluster.start)


async def test_a_connection_lost_in_the_middle_of_a_unit_of_work_is_a_postgresql_outage(
    cluster: PrivateCluster,
) -> None:
    """A crash between two statements of one transaction: asyncpg detaches the pooled connection and the
    next call raises InterfaceError ("released back to the pool") — an outage (503), not a bug (500)."""
    from depot_common.outages import dependency_unavailable

    url = await asyncio.to_thread(cluster.database, "lost_mid_transaction")
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        failures: list[BaseException] = []
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.fetchval("SELECT 1")
            await asyncio.to_thread(cluster.crash)
            await asyncio.sleep(0.5)  # asyncpg notices the lost socket
            for _ in range(2):
                try:
                    await conn.fetchval("SELECT 1")
                except Exception as error:
                    failures.append(error)
        assert len(failures) == 2, "every call on the lost connection fails"
        for failure in failures:
            outage = dependency_unavailable(failure)
            assert outage is not None, f"{failure!r} must be a PostgreSQL outage"
            assert outage.dependency == "postgresql"
    finally:
        await asyncio.to_thread(cluster.start)
        await pool.close()


async def test_postgresql_crash_during_a_backlog_dead_letters_nothing_and_applies_every_event_once(
    cluster: PrivateCluster, kafka_bootstrap: str
) -> None:
    """PostgreSQL crashed for 5 s (longer than the retry budget) while the indexer works through 400 events:
    it pauses, waits, resumes; 0 DLQ messages, every event applied exactly once, readiness named postgresql."""
    database = await asyncio.to_thread(cluster.database, f"crash_{secrets.token_hex(4)}")
    topic, group = f"test.crash.{secrets.token_hex(4)}", f"crash-{secrets.token_hex(4)}"
    await ensure_topics([kafka_bootstrap], {topic: 3, dlq_topic(topic, group): 1})
    documents = [uuid.uuid4() for _ in range(400)]
    await publish(kafka_bootstrap, topic, [stored(d) for d in documents])
    pool = await create_pool(database, max_size=4)
    try:
        await migrate(pool, "search", SEARCH_MIGRATIONS)
        async with indexing(kafka_bootstrap, topic, group, pool, NoBlobs()) as events:
            while await count_indexed(pool, documents) < 40:
                await asyncio.sleep(0.01)
            seen: set[str] = set()
            crash = asyncio.create_task(crash_for(cluster, 5))
            while not crash.done():
                seen |= events.waiting_for()
                if paused(group, "postgresql"):
                    seen.add("gauge")
                await asyncio.sleep(0.05)
            await crash
            for _ in range(600):
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    if await count_indexed(pool, documents) == len(documents):
                        break
                await asyncio.sleep(0.05)
            assert await count_indexed(pool, documents) == len(documents)
            assert events.waiting_for() == frozenset()
        inbox = await pool.fetchval("SELECT count(*) FROM search.processed_events")
    finally:
        await pool.close()
    assert seen >= {"postgresql", "gauge"}, "the consumer paused and said what it waits for"
    assert await dead_letters(kafka_bootstrap, topic, group) == 0
    assert outcome(group, "dead_lettered") == 0
    assert outcome(group, "applied") + outcome(group, "duplicate") == len(documents), "each event settled once"
    assert inbox == len(documents)
    assert paused(group, "postgresql") == 0


async def test_upload_api_answers_503_with_retry_after_during_a_postgresql_crash_then_201(
    cluster: PrivateCluster, stack_env: dict[str, str], auth: Any, tmp_path: Path
) -> None:
    """While PostgreSQL is down the upload API answers only 503 dependency_unavailable (postgresql) with
    Retry-After, never 500; once it is back the same process (same pool) answers 201 again."""
    database = await asyncio.to_thread(cluster.database, f"api_{secrets.token_hex(4)}")
    env = {**stack_env, "DEPOT_DATABASE_URL": database}
    statuses: list[tuple[float, int, dict[str, Any], str | None]] = []
    with api_process(env, tmp_path / "api.log") as (_, url):
        async with httpx.AsyncClient(base_url=url, timeout=20, headers=auth("outage-uploader")) as client:

            async def upload_until(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    content = secrets.token_bytes(64)
                    response = await client.post("/v1/documents", files={"file": ("a.bin", content)})
                    body = response.json()
                    statuses.append(
                        (
                            asyncio.get_running_loop().time(),
                            response.status_code,
                            body,
                            response.headers.get("retry-after"),
                        )
                    )
                    await asyncio.sleep(0.02)

            stop = asyncio.Event()
            async with background(upload_until(stop)):
                await asyncio.sleep(1)
                await asyncio.to_thread(cluster.crash)
                await asyncio.sleep(3)
                await asyncio.to_thread(cluster.start)
                back = asyncio.get_running_loop().time()
                for _ in range(300):
                    recent = [code for at, code, _, _ in statuses[-10:] if at > back]
                    if recent == [201] * 10:
                        break
                    await asyncio.sleep(0.05)
                stop.set()
    codes = [code for _, code, _, _ in statuses]
    assert set(codes) <= {201, 503}, f"only 201 and 503, never 500: {sorted(set(codes))}"
    unavailable = [(body, retry_after) for _, code, body, retry_after in statuses if code == 503]
    assert unavailable, "some requests were made while PostgreSQL was down"
    for body, retry_after in unavailable:
        assert body["error"] == "dependency_unavailable"
        assert body["dependency"] == "postgresql"
        assert retry_after is not None
        assert int(retry_after) > 0
    assert [code for at, code, _, _ in statuses[-10:] if at > back] == [201] * 10, "the same pool recovered"


# --- S3 stopped under the upload API's PUT -------------------------------------------------------


async def test_upload_api_answers_503_s3_within_the_timeout_while_s3_is_stopped_or_gone(
    make_settings: Any, auth: Any, tmp_path: Path
) -> None:
    """The single-object PUT (obstore) to a frozen S3 (SIGSTOP: connections accepted, nothing answered) gives
    503 dependency_unavailable (s3) with Retry-After within ``s3_timeout`` (2 s), never a hung request; 201 once
    it runs again; a closed port gives the same 503 at once."""
    moto, endpoint = await asyncio.to_thread(servers.start_moto, tmp_path)
    try:
        settings: UploadSettings = make_settings(UploadSettings, s3_endpoint=endpoint, s3_timeout=2)
        async with (
            serve(build_app(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30, headers=auth("s3-outage")) as client,
        ):

            async def upload() -> tuple[httpx.Response, float]:
                started = asyncio.get_running_loop().time()
                response = await client.post("/v1/documents", files={"file": ("a.bin", secrets.token_bytes(65536))})
                return response, asyncio.get_running_loop().time() - started

            first, _ = await upload()
            assert first.status_code == 201, first.text
            os.kill(moto.pid, signal.SIGSTOP)
            try:
                frozen, elapsed = await upload()
            finally:
                os.kill(moto.pid, signal.SIGCONT)
            back, _ = await upload()
            assert back.status_code == 201, back.text
            await asyncio.to_thread(moto.stop)
            gone, gone_elapsed = await upload()
    finally:
        moto.stop()
    for response in (frozen, gone):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "dependency_unavailable"
        assert response.json()["dependency"] == "s3"
        assert int(response.headers["retry-after"]) > 0
    assert elapsed < 2 + 1.5, f"answered {elapsed:.1f} s after the PUT began; s3_timeout is 2 s"
    assert gone_elapsed < 2 + 1.5, gone_elapsed


# --- S3 stopped for 30 s -------------------------------------------------------------------------


async def test_s3_stopped_for_30_s_during_indexing_dead_letters_nothing(
    pg_pool: asyncpg.Pool, kafka_bootstrap: str, make_settings: Any, tmp_path: Path
) -> None:
    """The S3 server frozen (SIGSTOP) for 30 s while the indexer reads 60 objects (5 indexed before, 55 published
    once it froze): reads time out, the partitions pause and wait; after SIGCONT every document is indexed with its
    text and the DLQ is empty."""
    moto, endpoint = await asyncio.to_thread(servers.start_moto, tmp_path)
    try:
        settings: IndexerSettings = make_settings(IndexerSettings, s3_endpoint=endpoint, s3_timeout=1)
        topic, group = f"test.s3pause.{secrets.token_hex(4)}", f"s3pause-{secrets.token_hex(4)}"
        await ensure_topics([kafka_bootstrap], {topic: 3, dlq_topic(topic, group): 1})
        await migrate(pg_pool, "search", SEARCH_MIGRATIONS)
        documents = [uuid.uuid4() for _ in range(60)]
        async with s3_client(settings) as s3:
            await s3.create_bucket(Bucket=settings.s3_bucket)
            for d in documents:
                await s3.put_object(Bucket=settings.s3_bucket, Key=f"documents/{d}", Body=f"word{d.hex}".encode())
            await publish(kafka_bootstrap, topic, [stored(d, size=36) for d in documents[:5]])
            reader = S3BlobReader(object_store(settings))
            async with indexing(kafka_bootstrap, topic, group, pg_pool, reader) as events:
                while await count_indexed(pg_pool, documents) < 5:
                    await asyncio.sleep(0.01)
                os.kill(moto.pid, signal.SIGSTOP)
                seen: set[str] = set()
                try:
                    # published now, so every one of them is read while S3 is frozen (a batch of a partition's
                    # records reads them all before its transaction: published together, all could be read first)
                    await publish(kafka_bootstrap, topic, [stored(d, size=36) for d in documents[5:]])
                    for _ in range(300):
                        seen |= events.waiting_for()
                        if paused(group, "s3"):
                            seen.add("gauge")
                        await asyncio.sleep(0.1)
                finally:
                    os.kill(moto.pid, signal.SIGCONT)
                for _ in range(400):
                    if await count_indexed(pg_pool, documents) == len(documents):
                        break
                    await asyncio.sleep(0.05)
                assert await count_indexed(pg_pool, documents) == len(documents)
    finally:
        moto.stop()
    assert seen >= {"s3", "gauge"}, "the partitions paused on S3 and readiness could name it"
    bodies = await pg_pool.fetch(
        "SELECT document_id, body FROM search.index_entries WHERE document_id = ANY($1::uuid[])", documents
    )
    assert all(row["body"] == f"word{row['document_id'].hex}" for row in bodies), "indexed with their text"
    assert await dead_letters(kafka_bootstrap, topic, group) == 0
    assert outcome(group, "dead_lettered") == 0


# --- poison still goes to the DLQ at once; a rebalance never crashes -----------------------------


class Note(BaseModel):
    text: str


async def test_a_poison_message_still_goes_to_the_dlq_at_once(pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> None:
    """A message that can never be processed is dead-lettered on its first attempt, with every dependency up."""
    schema, topic, group = f"poison_{secrets.token_hex(4)}", f"test.poison.{secrets.token_hex(4)}", "poison"
    await pg_pool.execute(f"CREATE SCHEMA {schema}")
    await pg_pool.execute(inbox_ddl(schema))
    await ensure_topics([kafka_bootstrap], {topic: 1, dlq_topic(topic, group): 1})

    async def refuse(conn: Any, event: CloudEvent[Any]) -> None:
        await conn.execute("SELECT 1/0")  # a fault of the message (division_by_zero), not an outage

    consumer = make_consumer([kafka_bootstrap], topic, group_id=f"{group}-{schema}", session_timeout_ms=6000)
    producer = make_producer([kafka_bootstrap])
    await asyncio.gather(consumer.start(), producer.start())
    events = EventConsumer(
        consumer=consumer,
        producer=producer,
        pool=pg_pool,
        schema=schema,
        group=group,
        handlers={"test.note": (Note, refuse)},
        max_attempts=1,
    )
    try:
        async with background(events.run()):
            started = asyncio.get_running_loop().time()
            note = CloudEvent[Note](source="test", type="test.note", subject="x", data=Note(text="x"))
            await producer.send_and_wait(topic, value=encode(note), key=b"x")
            [dead] = await read_until(kafka_bootstrap, dlq_topic(topic, group), lambda rs: len(rs) >= 1, timeout=15)
            elapsed = asyncio.get_running_loop().time() - started
            assert events.waiting_for() == frozenset()
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
        await pg_pool.execute(f"DROP SCHEMA {schema} CASCADE")
    assert "DivisionByZeroError" in dict(dead.headers)["x-error"].decode()
    assert dict(dead.headers)["x-attempts"] == b"1"
    assert elapsed < 10


async def test_a_rebalance_during_processing_never_crashes_a_consumer(
    pg_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    """A second consumer joins the group mid-backlog and leaves again: partitions are revoked under the first
    one's workers; neither crashes, and every event takes effect exactly once."""
    schema, topic, group = f"rebal_{secrets.token_hex(4)}", f"test.rebal.{secrets.token_hex(4)}", "rebalance"
    group = f"{group}-{schema}"
    await pg_pool.execute(f"CREATE SCHEMA {schema}")
    await pg_pool.execute(inbox_ddl(schema))
    await pg_pool.execute(f"CREATE TABLE {schema}.effects (text text NOT NULL)")
    await ensure_topics([kafka_bootstrap], {topic: 6, dlq_topic(topic, group): 1})

    async def record(conn: Any, event: CloudEvent[Any]) -> None:
        await asyncio.sleep(0.01)
        await conn.execute(f"INSERT INTO {schema}.effects (text) VALUES ($1)", event.data.text)

    producer = make_producer([kafka_bootstrap], linger_ms=20)
    await producer.start()
    texts = [f"n{n}" for n in range(900)]
    notes = [CloudEvent[Note](source="test", type="test.note", subject=t, data=Note(text=t)) for t in texts]
    await asyncio.gather(*[await producer.send(topic, value=encode(n), key=n.subject.encode()) for n in notes])

    def member() -> tuple[EventConsumer, Any]:
        consumer = make_consumer([kafka_bootstrap], topic, group_id=group, session_timeout_ms=6000, max_poll_records=50)
        return EventConsumer(
            consumer=consumer,
            producer=producer,
            pool=pg_pool,
            schema=schema,
            group=group,
            handlers={"test.note": (Note, record)},
        ), consumer

    async def applied() -> int:
        return int(await pg_pool.fetchval(f"SELECT count(*) FROM {schema}.effects"))

    first, first_client = member()
    second, second_client = member()
    try:
        await first_client.start()
        async with background(first.run()) as first_task:
            while await applied() < 100:
                await asyncio.sleep(0.02)
            await second_client.start()  # joins: the first one's partitions are revoked mid-work
            async with background(second.run()) as second_task:
                while await applied() < 400:
                    assert not first_task.done(), "the first consumer did not crash"
                    assert not second_task.done(), "the second consumer did not crash"
                    await asyncio.sleep(0.02)
                second.stop()
                await asyncio.wait_for(second_task, 20)
            await second_client.stop()  # leaves: everything moves back to the first one
            for _ in range(600):
                assert not first_task.done(), "the first consumer survived both rebalances"
                if await applied() >= len(texts):
                    break
                await asyncio.sleep(0.05)
    finally:
        await producer.stop()
        await first_client.stop()
    effects = [row["text"] for row in await pg_pool.fetch(f"SELECT text FROM {schema}.effects")]
    await pg_pool.execute(f"DROP SCHEMA {schema} CASCADE")
    assert sorted(effects) == sorted(texts), "every event took effect exactly once"
    assert outcome(group, "dead_lettered") == 0


# --- readiness and the ops server ----------------------------------------------------------------


async def test_readiness_is_false_while_the_broker_is_stopped(make_settings: Any, tmp_path: Path) -> None:
    """A broker that accepts connections but answers nothing (SIGSTOP) makes /readyz 503 with kafka false;
    it is ready again once the broker answers."""
    broker, bootstrap = await asyncio.to_thread(servers.start_tansu, tmp_path)
    try:
        settings: UploadSettings = make_settings(UploadSettings, kafka_bootstrap=bootstrap)
        async with serve(ops_app(settings, title="test")) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                stopped = await http.get("/readyz")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert stopped.status_code == 503
            assert stopped.json()["checks"] == {"postgres": True, "s3": True, "kafka": False}
            for _ in range(50):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await http.get("/readyz")).status_code == 200
    finally:
        broker.stop()


class WaitingWorker:
    """A worker that is running and waiting out S3."""

    running = True

    def waiting_for(self) -> frozenset[Any]:
        return frozenset({"s3"})


async def test_a_worker_waiting_out_a_dependency_is_not_ready_and_names_it(make_settings: Any) -> None:
    """A worker's readiness is false before it runs, and names the dependency it is waiting out."""
    settings: UploadSettings = make_settings(UploadSettings)
    readiness = WorkerReadiness()
    async with serve(ops_app(settings, title="test", worker=readiness)) as url, httpx.AsyncClient(base_url=url) as http:
        starting = await http.get("/readyz")
        assert starting.status_code == 503
        assert starting.json()["checks"]["worker"] is False
        readiness.attach(WaitingWorker())
        waiting = await http.get("/readyz")
    assert waiting.status_code == 503
    assert waiting.json()["checks"] == {"postgres": True, "s3": False, "kafka": True, "worker": True}


async def test_a_worker_whose_ops_port_is_taken_exits_non_zero_before_joining(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The indexer consumer cannot bind DEPOT_OPS_PORT: it exits non-zero at once instead of running unobservable."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **stack_env, "DEPOT_OPS_PORT": str(port), "DEPOT_LOG_FORMAT": "json"}
        log = tmp_path / "consumer.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "depot_indexer", "consume"], env=env, stdout=sink, stderr=sink
            )
        try:
            code = await asyncio.to_thread(process.wait, 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code != 0
    text = log.read_text()
    assert "address already in use" in text
    assert "consumer.joined" not in text, "it exited before joining the group"
