"""``GET /v1/admin/pipeline`` on a real upload API, PostgreSQL and broker: real backlog, lag and DLQ figures."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from aiokafka import TopicPartition

from depot_common.consumer import dlq_topic
from depot_common.db import migrate
from depot_common.dlq import redrive_group
from depot_common.events import COMPENSATIONS_TOPIC, CloudEvent, Reindex
from depot_common.kafka import ensure_topics, make_consumer, make_producer
from depot_common.outbox import enqueue
from depot_reconciler.bootstrap import MIGRATIONS as RECONCILE_MIGRATIONS
from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import serve

Auth = Callable[..., dict[str, str]]


async def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Commit ``offset`` on partition 0 of ``topic`` for ``group``, as its consumer would."""
    consumer = make_consumer([bootstrap], group_id=group)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): offset})
    finally:
        await consumer.stop()


async def test_admin_sees_real_backlog_lag_and_dlq_counts(
    make_settings: Callable[..., Any], kafka_bootstrap: str, pg_pool: asyncpg.Pool, auth: Auth
) -> None:
    """An unpublished outbox row 90 s old, a group 3 messages behind and a DLQ holding 2 (1 redriven) are
    reported as exactly that; the figures come from PostgreSQL and the broker, not from defaults."""
    topic, group = f"pipeline-test-{secrets.token_hex(4)}", f"group-{secrets.token_hex(4)}"
    dlq = dlq_topic(topic, group)
    await ensure_topics([kafka_bootstrap], {topic: 1, dlq: 1})
    producer = make_producer([kafka_bootstrap])
    await producer.start()
    try:  # sent together: one multi-record batch each, whose end some brokers report short
        for n in range(5):
            await producer.send(topic, f"m{n}".encode(), partition=0)
        for n in range(2):
            await producer.send(dlq, f"d{n}".encode(), partition=0, headers=[("x-original-topic", topic.encode())])
        await producer.flush()
    finally:
        await producer.stop()
    await _commit(kafka_bootstrap, group, topic, 2)
    await _commit(kafka_bootstrap, redrive_group(group), dlq, 1)

    await migrate(pg_pool, "reconcile", RECONCILE_MIGRATIONS)
    planted = CloudEvent[Reindex](
        source="depot/test",
        type="compensation.reindex",
        subject="x",
        data=Reindex(document_id=uuid.uuid4(), run_id=uuid.uuid4()),
    )
    async with pg_pool.acquire() as conn, conn.transaction():
        await enqueue(conn, "reconcile", topic=COMPENSATIONS_TOPIC, key="x", event=planted)
        await conn.execute(
            "UPDATE reconcile.outbox SET created_at = now() - interval '90 seconds' WHERE event_id = $1", planted.id
        )
    settings: UploadSettings = make_settings(UploadSettings, pipeline_consumers=f"{topic}:{group}")
    try:
        async with serve(build_app(settings)) as url, httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{url}/v1/admin/pipeline", headers=auth("ops", admin=True))
    finally:
        await pg_pool.execute("DELETE FROM reconcile.outbox WHERE event_id = $1", planted.id)
    assert response.status_code == 200, response.text
    body = response.json()
    outboxes = {o["schema"]: o for o in body["outboxes"]}
    assert set(outboxes) == {"upload", "search", "reconcile"}
    assert outboxes["reconcile"]["topic"] == COMPENSATIONS_TOPIC
    assert outboxes["reconcile"]["backlog"] >= 1
    assert outboxes["reconcile"]["oldest_unpublished_age_s"] >= 90
    assert outboxes["upload"]["backlog"] is not None
    assert body["consumers"] == [
        {
            "group": group,
            "topic": topic,
            "lag": 3,
            "partitions": [{"partition": 0, "committed": 2, "end": 5, "lag": 3}],
        }
    ]
    assert body["dlqs"] == [{"topic": dlq, "group": group, "source_topic": topic, "messages": 2, "pending": 1}]


async def test_a_consumer_that_never_committed_lags_by_the_whole_topic(
    make_settings: Callable[..., Any], kafka_bootstrap: str, auth: Auth
) -> None:
    """A group with no committed offset lags by every message of the topic; a DLQ never created holds 0."""
    topic, group = f"pipeline-test-{secrets.token_hex(4)}", f"group-{secrets.token_hex(4)}"
    await ensure_topics([kafka_bootstrap], {topic: 1})
    producer = make_producer([kafka_bootstrap])
    await producer.start()
    try:
        for n in range(4):
            await producer.send(topic, f"m{n}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    settings: UploadSettings = make_settings(UploadSettings, pipeline_consumers=f"{topic}:{group}")
    async with serve(build_app(settings)) as url, httpx.AsyncClient(timeout=30) as client:
        body = (await client.get(f"{url}/v1/admin/pipeline", headers=auth("ops", admin=True))).json()
    assert body["consumers"][0]["partitions"] == [{"partition": 0, "committed": None, "end": 4, "lag": 4}]
    assert body["dlqs"][0]["messages"] == 0


async def test_pipeline_is_for_admins_only(upload_api: str, auth: Auth) -> None:
    """A non-admin token gets 403 forbidden, no token 401."""
    async with httpx.AsyncClient() as client:
        forbidden = await client.get(f"{upload_api}/v1/admin/pipeline", headers=auth("mallory"))
        anonymous = await client.get(f"{upload_api}/v1/admin/pipeline")
    assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")
    assert anonymous.status_code == 401


async def test_openapi_documents_the_stream_and_the_pipeline(upload_api: str) -> None:
    """The OpenAPI document lists GET /v1/events as text/event-stream (401, 503) and the pipeline's 401/403."""
    async with httpx.AsyncClient() as client:
        spec = (await client.get(f"{upload_api}/openapi.json")).json()
    events = spec["paths"]["/v1/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"]
    assert {"401", "503"} <= set(events)
    pipeline = spec["paths"]["/v1/admin/pipeline"]["get"]["responses"]
    assert {"200", "401", "403"} <= set(pipeline)
    outbox = spec["components"]["schemas"]["OutboxOut"]
    assert "schema" in outbox["properties"]
