"""Crash safety of the write path: kill the upload API at each step and inspect what is left.

Every crash must leave only states the reconciler names (docs/reconciler.md): a ``pending`` row (a
``stale_upload`` once past its TTL) and possibly an object without a live row — never a
``stored`` row without its bytes, and never an acknowledged upload lost.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from depot_upload.faults import CRASH_EXIT_CODE
from depot_upload.settings import UploadSettings
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
