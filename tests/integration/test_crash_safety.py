"""Crash safety: kill Depot's processes at each step and inspect, then repair, what is left.

Every crash must leave only states the reconciler names (SPEC §7): a ``pending`` row (a
``stale_upload`` once past its TTL) and possibly an object without a live row — never a
``stored`` row without its bytes, and never an acknowledged upload lost. The last test
crashes every process at its risky step, reconciles with ``--apply``, lets the workers
drain, and measures SPEC §8.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from depot_common.db import create_pool
from depot_common.events import DOCUMENTS_TOPIC
from depot_common.faults import CRASH_EXIT_CODE
from depot_common.lifecycle import background_task
from depot_common.s3 import s3_client
from depot_devstack import servers
from depot_indexer.bootstrap import indexer_consumer
from depot_indexer.settings import IndexerSettings
from depot_reconciler import cli
from depot_reconciler.relay import run_relay as reconciler_relay
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.bootstrap import compensation_consumer
from depot_upload.bootstrap import run_relay as upload_relay
from depot_upload.settings import UploadSettings
from tests.conftest import patched_environ
from tests.invariants import measure_invariants
from tests.kafka_helpers import read_until
from tests.processes import api_process

Auth = Callable[..., dict[str, str]]


def post(url: str, headers: dict[str, str], data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/documents", headers=headers, files={"file": ("crash.txt", data)}, timeout=30)


async def rows_of(pool: asyncpg.Pool, owner: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, status, object_key, size_bytes, sha256 FROM upload.documents WHERE owner_id = $1", owner
    )


async def object_of(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        response = await s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None
    data: bytes = await response["Body"].read()
    return data


@pytest.mark.parametrize(("point", "object_written"), [("after_pending", False), ("after_object", True)])
async def test_a_crash_before_the_final_transaction_leaves_a_pending_row(
    stack_env: dict[str, str],
    upload_api: str,
    pg_pool: asyncpg.Pool,
    s3: Any,
    upload_settings: UploadSettings,
    auth: Auth,
    tmp_path: Path,
    point: str,
    object_written: bool,
) -> None:
    """Killed before `stored` commits: the client gets no 201, and a pending row remains (with or without the
    object) — what the reconciler's stale_upload check repairs; no stored row, no outbox event."""
    owner = f"crash-{secrets.token_hex(4)}"
    data = f"bytes of {owner}".encode()
    with api_process(stack_env, tmp_path / "api.log", DEPOT_CRASH_AT=point) as (process, url):
        with pytest.raises(httpx.TransportError):
            post(url, auth(owner), data)
        assert process.wait(10) == CRASH_EXIT_CODE
    [row] = await rows_of(pg_pool, owner)
    assert row["status"] == "pending"
    stored = await object_of(s3, upload_settings.s3_bucket, row["object_key"])
    assert stored == (data if object_written else None)
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.outbox WHERE key = $1", str(row["id"])) == 0


async def test_a_crash_after_the_final_transaction_loses_nothing(
    stack_env: dict[str, str],
    upload_api: str,
    pg_pool: asyncpg.Pool,
    s3: Any,
    upload_settings: UploadSettings,
    auth: Auth,
    tmp_path: Path,
    http: httpx.AsyncClient,
) -> None:
    """Killed after `stored` commits but before answering: the row is stored with its exact bytes and its event,
    and the client's retry with the same Idempotency-Key gets the 201 it missed."""
    owner = f"crash-{secrets.token_hex(4)}"
    data = f"bytes of {owner}".encode()
    headers = {**auth(owner), "Idempotency-Key": f"retry-{owner}"}
    with api_process(stack_env, tmp_path / "api.log", DEPOT_CRASH_AT="after_stored") as (process, url):
        with pytest.raises(httpx.TransportError):
            post(url, headers, data)
        assert process.wait(10) == CRASH_EXIT_CODE
    [row] = await rows_of(pg_pool, owner)
    assert row["status"] == "stored"
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert await object_of(s3, upload_settings.s3_bucket, row["object_key"]) == data
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.outbox WHERE key = $1", str(row["id"])) == 1
    retry = await http.post(f"{upload_api}/v1/documents", headers=headers, files={"file": ("crash.txt", data)})
    assert retry.status_code == 201
    assert retry.json()["id"] == str(row["id"])


MIB = 1024 * 1024


async def test_crashes_at_every_step_then_reconcile_and_drain_restore_the_invariants(
    stack_env: dict[str, str],
    postgres_admin_url: str,
    make_settings: Callable[..., Any],
    auth: Auth,
    tmp_path: Path,
) -> None:
    """The API killed mid-multipart, in a presigned complete and between a delete's commit and its blob removal
    (besides the synchronous steps), the relay between send and mark, the compensation worker between quarantine
    copy and delete: after `reconcile --apply` and a drain, SPEC §8 invariants 1-6 hold and every acknowledged
    upload is intact."""
    name = f"depot_crash_{secrets.token_hex(4)}"
    database = await asyncio.to_thread(servers.recreate_database, postgres_admin_url, name)
    broker, bootstrap = servers.start_tansu(tmp_path)  # a world of its own: database, bucket and broker
    ttl = 3
    env = {
        **stack_env,
        "DEPOT_DATABASE_URL": database,
        "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
        "DEPOT_S3_BUCKET": f"depot-crash-{secrets.token_hex(4)}",
        "DEPOT_UPLOAD_TTL": str(ttl),
        "DEPOT_PART_SIZE": str(5 * MIB),
        "DEPOT_RECONCILE_GRACE": "0",
        "DEPOT_RELAY_POLL_INTERVAL": "1",
        "DEPOT_CONSUMER_SESSION_TIMEOUT": "2",
    }
    reconciler_settings: ReconcilerSettings = make_settings(
        ReconcilerSettings,
        database_url=database,
        kafka_bootstrap=bootstrap,
        s3_bucket=env["DEPOT_S3_BUCKET"],
        upload_ttl=ttl,
        reconcile_grace=0,
        relay_poll_interval=1,
    )
    upload_settings: UploadSettings = make_settings(
        UploadSettings,
        database_url=database,
        kafka_bootstrap=bootstrap,
        s3_bucket=env["DEPOT_S3_BUCKET"],
        upload_ttl=ttl,
        relay_poll_interval=1,
        consumer_session_timeout=2,
    )
    indexer_settings: IndexerSettings = make_settings(
        IndexerSettings,
        database_url=database,
        kafka_bootstrap=bootstrap,
        s3_bucket=env["DEPOT_S3_BUCKET"],
        consumer_session_timeout=2,
    )
    headers = auth("crash")
    acknowledged: dict[str, str] = {}
    pool = None
    try:
        # acknowledged uploads (small and multipart), a document to delete, a presigned upload whose bytes are in S3
        with api_process(env, tmp_path / "api.log") as (_, url):
            for data in (b"small one\n", b"small two\n", os.urandom(11 * MIB)):
                response = post(url, headers, data)
                assert response.status_code == 201, response.text
                acknowledged[response.json()["id"]] = hashlib.sha256(data).hexdigest()
            doomed = post(url, headers, b"to be deleted\n").json()["id"]
            presigned_bytes = os.urandom(2000)
            declared = {
                "filename": "p.bin",
                "size_bytes": len(presigned_bytes),
                "sha256": hashlib.sha256(presigned_bytes).hexdigest(),
            }
            started = httpx.post(f"{url}/v1/uploads", headers=headers, json=declared, timeout=30)
            assert started.status_code == 201, started.text
            [part] = started.json()["parts"]
            put = httpx.put(part["url"], content=presigned_bytes, headers=part.get("headers", {}), timeout=30)
            assert put.status_code == 200, put.text
            upload_id = started.json()["upload_id"]

        crashes: list[tuple[str, Callable[[str], Any]]] = [
            ("after_pending", lambda url: post(url, headers, b"crash after pending\n")),
            ("after_object", lambda url: post(url, headers, b"crash after object\n")),
            ("mid_multipart", lambda url: post(url, headers, os.urandom(11 * MIB))),
            ("after_stored", lambda url: post(url, headers, b"crash after stored\n")),
            (
                "presigned_before_stored",
                lambda url: httpx.post(f"{url}/v1/uploads/{upload_id}/complete", headers=headers, json={}, timeout=30),
            ),
            ("delete_after_commit", lambda url: httpx.delete(f"{url}/v1/documents/{doomed}", headers=headers)),
        ]
        for point, request in crashes:
            with api_process(env, tmp_path / f"api-{point}.log", DEPOT_CRASH_AT=point) as (process, url):
                with pytest.raises(httpx.TransportError):
                    request(url)
                assert await asyncio.to_thread(process.wait, 10) == CRASH_EXIT_CODE, point

        pool = await create_pool(database, max_size=4)
        async with s3_client(reconciler_settings) as s3:
            listed = await s3.list_multipart_uploads(Bucket=env["DEPOT_S3_BUCKET"], Prefix="documents/")
            assert len(listed.get("Uploads", [])) == 1, "the mid-multipart crash left its upload in progress"
            assert await object_of(s3, env["DEPOT_S3_BUCKET"], f"documents/{doomed}") is not None

            # the relay dies after Kafka acknowledged its batch, before marking it
            unpublished = "SELECT count(*) FROM upload.outbox WHERE published_at IS NULL"
            backlog = await pool.fetchval(unpublished)
            relay = worker_process(env, tmp_path / "relay.log", "relay", DEPOT_CRASH_AT="relay_after_send")
            assert await asyncio.to_thread(relay.wait, 60) == CRASH_EXIT_CODE, (tmp_path / "relay.log").read_text()
            assert await pool.fetchval(unpublished) == backlog >= 5
            sent = await read_until(bootstrap, DOCUMENTS_TOPIC, lambda records: len(records) >= backlog)
            assert len(sent) >= backlog, "the batch reached Kafka before the relay died"

            await asyncio.sleep(ttl + 1)  # every pending row is now past its TTL
            async with (
                background_task(upload_relay(upload_settings)),
                background_task(reconciler_relay(reconciler_settings)),
                indexer_consumer(indexer_settings) as indexer,
                background_task(indexer.run()),
            ):
                with patched_environ(env):
                    code = await asyncio.to_thread(cli.main, ["run", "--apply", "--force"])
                assert code == cli.EXIT_FINDINGS
                # the compensation worker dies between an orphan's quarantine copy and its deletion
                worker = worker_process(
                    env, tmp_path / "worker.log", "compensate", DEPOT_CRASH_AT="compensation_after_copy"
                )
                code = await asyncio.to_thread(worker.wait, 60)
                assert code == CRASH_EXIT_CODE, (tmp_path / "worker.log").read_text()
                async with (
                    compensation_consumer(upload_settings) as (compensations, _),
                    background_task(compensations.run()),
                ):
                    report = None
                    for _ in range(180):  # drain: until SPEC §8 1-4 hold, or 90 s
                        report = await measure_invariants(
                            pool, s3, reconciler_settings, invariants=frozenset({1, 2, 3, 4})
                        )
                        if not report.violations:
                            break
                        await asyncio.sleep(0.5)
                    assert report is not None
                    assert report.violations == []
            report = await measure_invariants(
                pool, s3, reconciler_settings, acknowledged=acknowledged, invariants=frozenset({1, 2, 3, 4, 5, 6})
            )
        assert report.violations == []
        assert (report.acknowledged, report.stored) == (3, 5)  # + the crash after stored and the presigned upload
        quarantined = await pool.fetchval(
            "SELECT count(*) FROM upload.quarantine WHERE object_key = $1", f"documents/{doomed}"
        )
        assert quarantined == 1, "the orphan was quarantined once, by the worker that took over"
    finally:
        if pool is not None:
            await pool.close()
        broker.stop()
        await asyncio.to_thread(servers.drop_database, postgres_admin_url, name)


def worker_process(env: dict[str, str], log: Path, command: str, **extra: str) -> subprocess.Popen[bytes]:
    """`depot-upload <command>` as a real process with the world's settings."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "depot_upload", command],
            env={**os.environ, **env, **extra},
            stdout=sink,
            stderr=sink,
        )
