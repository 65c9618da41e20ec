"""Crash safety of the write path: kill the upload API at each step and inspect what is left.

Every crash must leave only states the reconciler names (docs/reconciler.md): a ``pending`` row (a
``stale_upload`` once past its TTL) and possibly an object without a live row — never a
``stored`` row without its bytes, and never an acknowledged upload lost.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from depot_upload.faults import CRASH_EXIT_CODE
from depot_upload.settings import UploadSettings
from tests.crash_recovery import CrashWorld, crash_world, recover
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
    [("after_pending", False), ("after_object", True), ("before_stored", True)],
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
