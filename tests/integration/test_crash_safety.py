"""Crash safety of the write path: kill the upload API at each step and inspect what is left.

Every crash must leave only states the reconciler names (docs/reconciler.md): a ``pending`` row (a
``stale_upload`` once past its TTL) and possibly an object without a live row — never a
``stored`` row without its bytes, and never an acknowledged upload lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from depot_common.events import DOCUMENTS_TOPIC
from depot_common.faults import CRASH_EXIT_CODE
from depot_common.lifecycle import background_task
from depot_common.outbox import OutboxRelay
from depot_reconciler import cli
from depot_reconciler.bootstrap import run_relay as reconciler_relay
from depot_upload.settings import UploadSettings
from tests.crash_recovery import TTL, CrashWorld, crash_world, reconcile, recover
from tests.kafka_helpers import published_events
from tests.processes import api_process, crashing_apis

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


@pytest.mark.parametrize(
    ("point", "object_written"),
    [("after_pending", False), ("after_object", True)],
)
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
    relay: OutboxRelay,
    kafka_bootstrap: str,
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
    [event] = await published_events(kafka_bootstrap, DOCUMENTS_TOPIC, str(row["id"]))  # the relay publishes it
    assert event["type"] == "document.stored"
    retry = await http.post(f"{upload_api}/v1/documents", headers=headers, files={"file": ("crash.txt", data)})
    assert retry.status_code == 201
    assert retry.json()["id"] == str(row["id"])


@pytest.fixture
async def crashed(
    postgres_admin_url: str, make_settings: Callable[..., Any], stack_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[CrashWorld]:
    async with crash_world(postgres_admin_url, make_settings, stack_env, tmp_path) as created:
        yield created


@pytest.mark.timeout(300)  # API start-up is slow on a loaded machine
async def test_a_presigned_start_killed_around_create_multipart_leaves_nothing_after_reconcile(
    crashed: CrashWorld, auth: Auth, tmp_path: Path
) -> None:
    """Killed after the session row commits — before CreateMultipartUpload (``after_session``), or after it but
    before its id is recorded (``after_multipart_created``): a pending document names the key either way, so
    reconcile --apply fails it (stale_upload) and has the unrecorded S3 upload aborted (abandoned_multipart); then
    no multipart upload is in progress, nothing is pending, and invariants 1-7 hold."""
    points = ("after_session", "after_multipart_created")
    owners = {point: f"crash-{point}-{secrets.token_hex(4)}" for point in points}
    with crashing_apis(crashed.env, tmp_path, points) as apis:
        for point, (process, url) in apis.items():
            declared = {"filename": "big.bin", "size_bytes": 20 * 1024 * 1024, "sha256": secrets.token_hex(32)}
            with pytest.raises(httpx.TransportError):
                httpx.post(f"{url}/v1/uploads", headers=auth(owners[point]), json=declared, timeout=30)
            assert process.wait(10) == CRASH_EXIT_CODE
    pool = crashed.world.pool
    keys = {}
    for point, owner in owners.items():
        [session] = await pool.fetch(
            "SELECT d.id, d.status, s.multipart_upload_id FROM upload.documents d"
            " JOIN upload.upload_sessions s ON s.document_id = d.id WHERE d.owner_id = $1",
            owner,
        )
        assert (session["status"], session["multipart_upload_id"]) == ("pending", None)
        keys[point] = f"documents/{session['id']}"
    assert {key for key, _ in await crashed.in_progress()} == {keys["after_multipart_created"]}

    report = await recover(crashed)
    assert report.violations == []
    assert await crashed.in_progress() == set()
    statuses = await pool.fetch("SELECT object_key, status FROM upload.documents")
    assert {(row["object_key"], row["status"]) for row in statuses} == {(key, "failed") for key in keys.values()}
    audit = await pool.fetch("SELECT class, subject FROM reconcile.audit")
    assert sorted(row["class"] for row in audit) == ["abandoned_multipart", "stale_upload", "stale_upload"]
    [aborted] = [row["subject"] for row in audit if row["class"] == "abandoned_multipart"]
    assert aborted.startswith(f"{keys['after_multipart_created']}?uploadId=")


async def statuses(pool: asyncpg.Pool) -> dict[str, str]:
    """Each document's status, by object key."""
    return {
        row["object_key"]: row["status"] for row in await pool.fetch("SELECT object_key, status FROM upload.documents")
    }


def spawn(crashed: CrashWorld, command: str, point: str, log: Path) -> subprocess.Popen[bytes]:
    """``depot-upload <command>`` (a worker, no HTTP) armed to die at ``point``."""
    env = {**os.environ, **crashed.env, "DEPOT_CRASH_AT": point}
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "depot_upload", command], env=env, stdout=sink, stderr=sink)


def died_at(process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"never reached its crash point: {log.read_text()[-2000:]}") from None
    assert code == CRASH_EXIT_CODE, log.read_text()[-2000:]


@pytest.mark.timeout(480)  # five processes start and die; start-up is slow on a loaded machine
async def test_every_process_killed_mid_write_leaves_what_reconcile_and_the_workers_repair(
    crashed: CrashWorld, auth: Auth, tmp_path: Path
) -> None:
    """One world, a process killed at each dangerous step, then recovery (reconcile --apply, drain) and SPEC §8
    invariants 1-7:

    * a streamed upload larger than the part size, killed after its first part reached S3 (``after_part``): its
      multipart upload is aborted, its document failed;
    * a presigned upload killed in complete after the bytes were verified, before ``stored`` committed
      (``before_upload_stored``): the bytes match the declaration, so stale_upload finalizes it (``stored``);
    * a delete killed between its commit and the object's removal (``after_delete_commit``): the object is
      quarantined as an orphan;
    * the outbox relay killed after the broker acked a batch, before marking it (``after_send``): the batch is still
      unpublished, is sent again, and the indexer applies it once;
    * the compensation worker killed after copying that orphan to quarantine/, before deleting it
      (``after_quarantine_copy``): the redelivered compensation finishes the move.
    """
    world = crashed.world
    pool = world.pool
    owner = f"crash-{secrets.token_hex(4)}"
    headers = auth(owner)
    part_size = 5 * 1024 * 1024
    api_env = {**crashed.env, "DEPOT_PART_SIZE": str(part_size)}
    points = ("after_part", "before_upload_stored", "after_delete_commit")
    big = secrets.token_bytes(3 * part_size + 1024)  # a second full part makes the stream wait for the first
    presigned = f"presigned bytes of {owner}".encode()
    kept, deleted = (f"{name} of {owner}".encode() for name in ("kept", "deleted"))

    with crashing_apis(api_env, tmp_path, points) as apis:
        process, url = apis["after_part"]
        with pytest.raises(httpx.TransportError):
            post(url, headers, big)
        assert process.wait(10) == CRASH_EXIT_CODE

        process, url = apis["before_upload_stored"]
        declared = {"filename": "p.txt", "size_bytes": len(presigned), "sha256": hashlib.sha256(presigned).hexdigest()}
        upload = httpx.post(f"{url}/v1/uploads", headers=headers, json=declared, timeout=30)
        assert upload.status_code == 201, upload.text
        [part] = upload.json()["parts"]
        assert httpx.put(part["url"], content=presigned, headers=part["headers"], timeout=30).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{url}/v1/uploads/{upload.json()['upload_id']}/complete", headers=headers, timeout=30)
        assert process.wait(10) == CRASH_EXIT_CODE

        process, url = apis["after_delete_commit"]
        acknowledged = {}
        for data in (kept, deleted):
            response = post(url, headers, data)
            assert response.status_code == 201, response.text
            acknowledged[response.json()["id"]] = hashlib.sha256(data).hexdigest()
        kept_id, deleted_id = acknowledged
        del acknowledged[deleted_id]
        with pytest.raises(httpx.TransportError):
            httpx.delete(f"{url}/v1/documents/{deleted_id}", headers=headers, timeout=30)
        assert process.wait(10) == CRASH_EXIT_CODE

    rows = {
        row["object_key"]: row["status"] for row in await pool.fetch("SELECT object_key, status FROM upload.documents")
    }
    assert sorted(rows.values()) == ["deleted", "pending", "pending", "stored"]
    [(streamed_key, _)] = await crashed.in_progress()
    assert rows[streamed_key] == "pending"
    deleted_key = f"documents/{deleted_id}"
    assert await object_of(world.s3, world.bucket, deleted_key) == deleted

    # the relay: dies once the broker acked the batch (3 events: stored, stored, deleted), before marking it
    log = tmp_path / "relay.log"
    died_at(spawn(crashed, "relay", "after_send", log), log)
    unpublished = "SELECT count(*) FROM upload.outbox"
    assert await pool.fetchval(unpublished) == 3

    # the compensation worker: dies after copying the orphan to quarantine/, before deleting the original
    await asyncio.sleep(TTL + 1)
    assert await reconcile(crashed, "--apply", "--force") == cli.EXIT_FINDINGS
    log = tmp_path / "compensate.log"
    worker = spawn(crashed, "compensate", "after_quarantine_copy", log)
    async with background_task(reconciler_relay(crashed.reconciler_settings())):
        await asyncio.to_thread(died_at, worker, log)
    assert await object_of(world.s3, world.bucket, f"quarantine/{deleted_key}") == deleted
    assert await object_of(world.s3, world.bucket, deleted_key) == deleted

    report = await recover(crashed, acknowledged=acknowledged)
    assert report.violations == []
    assert await crashed.in_progress() == set()
    assert await pool.fetchval(unpublished) == 0
    final = {
        row["object_key"]: row["status"] for row in await pool.fetch("SELECT object_key, status FROM upload.documents")
    }
    presigned_key = f"documents/{upload.json()['upload_id']}"
    assert final == {
        streamed_key: "failed",
        presigned_key: "stored",
        f"documents/{kept_id}": "stored",
        deleted_key: "deleted",
    }
    assert await object_of(world.s3, world.bucket, presigned_key) == presigned
    assert await object_of(world.s3, world.bucket, deleted_key) is None
    assert await object_of(world.s3, world.bucket, f"quarantine/{deleted_key}") == deleted
    assert await pool.fetchval("SELECT count(*) FROM upload.quarantine WHERE object_key = $1", deleted_key) == 1
    indexed = await pool.fetch("SELECT document_id FROM search.index_entries WHERE status = 'indexed'")
    assert {str(row["document_id"]) for row in indexed} == {kept_id, upload.json()["upload_id"]}
