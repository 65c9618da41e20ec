"""OpenTelemetry end to end: the services as processes export to an OTLP/HTTP receiver inside the test."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka import TopicPartition

from depot_common.events import DOCUMENTS_TOPIC
from depot_common.kafka import end_offsets, ensure_topics, make_consumer
from depot_devstack import servers
from depot_upload.settings import UploadSettings
from tests.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.processes import service_process
from tests.upload_helpers import unique_text, upload

pytestmark = pytest.mark.timeout(300)

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP's SpanKind numbers


async def start_group_at_end(bootstrap: list[str], group: str, topic: str, partitions: int) -> None:
    """Commit ``group``'s offsets at the end of ``topic``, so its consumer reads only what comes next."""
    await ensure_topics(bootstrap, {topic: partitions})
    consumer = make_consumer(bootstrap, group_id=group)
    await consumer.start()
    try:
        await consumer.topics()
        found = consumer.partitions_for_topic(topic) or set()
        ends = await end_offsets(consumer, [TopicPartition(topic, p) for p in sorted(found)])
        await consumer.commit(ends)
    finally:
        await consumer.stop()


@contextmanager
def worker(module: str, command: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", module, command], env=env, stdout=sink, stderr=sink)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(15)


def in_trace(trace_id: str) -> Callable[[list[ReceivedSpan]], bool]:
    """Done once the trace holds the indexer's index write and its consume span (which ends after it)."""

    def done(spans: list[ReceivedSpan]) -> bool:
        indexer = [s for s in spans if s.trace_id == trace_id and s.service == "indexer.consume"]
        return any("search.index_entries" in db_statement(s) for s in indexer) and any(
            s.kind == CONSUMER for s in indexer
        )

    return done


def db_statement(span: ReceivedSpan) -> str:
    return str(span.attributes.get("db.statement") or span.attributes.get("db.query.text") or "")


async def test_one_upload_is_one_trace_across_api_relay_and_indexer(
    stack_env: dict[str, str],
    postgres_admin_url: str,
    upload_settings: UploadSettings,
    auth: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    """One upload → one trace: the API's server span with its PostgreSQL and S3 spans, the relay's publish (in
    another process, continuing the traceparent stored with the event) and the indexer's consume with its index
    write (continuing the Kafka header); each process under its own service.name."""
    name = f"depot_tracing_{secrets.token_hex(4)}"
    database = await asyncio.to_thread(servers.recreate_database, postgres_admin_url, name)
    group = f"tracing-{secrets.token_hex(4)}"
    await start_group_at_end(
        upload_settings.kafka_servers, group, DOCUMENTS_TOPIC, upload_settings.documents_partitions
    )
    with otlp_receiver() as receiver:
        env = {
            **stack_env,
            "DEPOT_DATABASE_URL": database,
            "DEPOT_CONSUMER_GROUP": group,
            "DEPOT_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        logs = {process: tmp_path / f"{process}.log" for process in ("api", "relay", "indexer")}
        with (
            service_process("depot_upload", env, logs["api"]) as (_, api),
            worker("depot_upload", "relay", {**os.environ, **env}, logs["relay"]),
            worker("depot_indexer", "consume", {**os.environ, **env}, logs["indexer"]),
        ):
            async with httpx.AsyncClient(timeout=30) as http:
                response = await upload(http, api, auth("alice"), unique_text("traced"))
            assert response.status_code == 201, response.text
            document_id = response.json()["id"]
            trace_id = response.headers["traceparent"].split("-")[1]
            spans = await asyncio.to_thread(receiver.wait_for, in_trace(trace_id), 120)
            diagnosis = "\n".join(f"{p}: {log.read_text()[-3000:]}" for p, log in logs.items())
            assert in_trace(trace_id)(spans), f"no index write in trace {trace_id}: {spans}\n{diagnosis}"

    ours = [s for s in spans if s.trace_id == trace_id]
    by_service = {service: [s for s in ours if s.service == service] for service in {s.service for s in ours}}
    assert set(by_service) == {"upload-api.serve", "upload-api.relay", "indexer.consume"}, sorted(by_service)

    [server] = [s for s in by_service["upload-api.serve"] if s.kind == SERVER]
    assert server.name == "POST /v1/documents"
    api_spans = by_service["upload-api.serve"]
    assert any(s.kind == CLIENT and s.attributes.get("db.system") == "postgresql" for s in api_spans)
    s3_spans = [s for s in api_spans if s.kind == CLIENT and s.name.startswith("S3.")]
    # the single-object PUT goes through obstore, traced as aiobotocore's calls are
    assert [s.name for s in s3_spans] == ["S3.PutObject"], [s.name for s in api_spans]
    put = s3_spans[0]
    assert put.parent_id in {s.span_id for s in api_spans}
    assert {k: put.attributes.get(k) for k in ("rpc.system", "rpc.service", "rpc.method", "http.request.method")} == {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": "PutObject",
        "http.request.method": "PUT",
    }
    assert put.attributes.get("http.response.status_code") == 200
    api_ids = {s.span_id for s in api_spans}
    bookkeeping = [s.name for s in ours if s.name.rstrip(";") in {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}]
    assert bookkeeping == [], "SQL bookkeeping spans are not sampled"

    [publish] = by_service["upload-api.relay"]
    assert (publish.name, publish.kind) == (f"publish {DOCUMENTS_TOPIC}", PRODUCER)
    assert publish.parent_id in api_ids, "the relay's publish continues the request's trace (stored traceparent)"
    assert publish.attributes["messaging.kafka.message.key"] == document_id

    [consume] = [s for s in by_service["indexer.consume"] if s.kind == CONSUMER]
    assert consume.name == f"process {DOCUMENTS_TOPIC}"
    assert consume.parent_id == publish.span_id, "the indexer continues the Kafka header the relay wrote"
    index_writes = [s for s in by_service["indexer.consume"] if "search.index_entries" in db_statement(s)]
    assert index_writes
    assert all(s.parent_id == consume.span_id for s in index_writes)
    assert any(s.name == "S3.GetObject" for s in by_service["indexer.consume"])

    every_publish = [s for s in spans if s.service == "upload-api.relay"]
    assert every_publish == [publish], "the private outbox held one event: one publish, in the upload's trace"

    [request_line] = [
        line
        for line in map(json.loads, logs["api"].read_text().splitlines())
        if line.get("event") == "http.request" and line.get("route") == "/v1/documents"
    ]
    assert (request_line["trace_id"], request_line["span_id"]) == (trace_id, server.span_id), request_line
    applied = [
        line
        for line in map(json.loads, logs["indexer"].read_text().splitlines())
        if line.get("event") == "consumer.applied" and line.get("trace_id") == trace_id
    ]
    assert applied
    assert applied[0]["span_id"] == consume.span_id
