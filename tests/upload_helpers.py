"""Helpers shared by the upload API integration tests: requests as a client sends them, looks at S3 and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from botocore.exceptions import ClientError

MIB = 1024 * 1024
#: The ``auth`` fixture: ``auth(owner)`` → headers with a bearer token of that owner.
Auth = Callable[..., dict[str, str]]


def owner() -> str:
    """A fresh owner id, so a test sees only its own documents."""
    return f"owner-{secrets.token_hex(4)}"


def unique_text(words: str = "") -> bytes:
    return f"{words} {secrets.token_hex(16)}\n".encode()


async def upload(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], data: bytes, filename: str = "notes.txt"
) -> httpx.Response:
    return await http.post(f"{url}/v1/documents", headers=headers, files={"file": (filename, data, "text/plain")})


async def object_keys(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix="documents/"):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def multipart_uploads(s3: Any, bucket: str) -> set[str]:
    """Ids of the multipart uploads in progress in ``bucket``."""
    response = await s3.list_multipart_uploads(Bucket=bucket)
    return {upload["UploadId"] for upload in response.get("Uploads", [])}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64_sha256(data: bytes) -> str:
    """The SHA-256 as S3's ``x-amz-checksum-sha256`` spells it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def start(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    data: bytes,
    *,
    filename: str = "big.bin",
    content_type: str | None = "application/octet-stream",
    **overrides: Any,
) -> httpx.Response:
    """``POST /v1/uploads`` declaring ``data`` (any field overridable)."""
    body = {"filename": filename, "size_bytes": len(data), "sha256": sha256(data), "content_type": content_type}
    return await http.post(f"{url}/v1/uploads", headers=headers, json={**body, **overrides})


async def put_part(
    http: httpx.AsyncClient, upload: dict[str, Any], part: dict[str, Any], data: bytes
) -> httpx.Response:
    """PUT one part's share of ``data`` to its presigned URL with the headers signed into it, as a client must."""
    size, number = upload["part_size"], part["part_number"]
    return await http.put(part["url"], content=data[(number - 1) * size : number * size], headers=part["headers"])


async def put_parts(http: httpx.AsyncClient, upload: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUT each part's bytes to its presigned URL with its signed headers, as a client must; the parts with ETags."""
    parts = []
    for part in upload["parts"]:
        number = part["part_number"]
        response = await put_part(http, upload, part, data)
        assert response.status_code == 200, response.text
        parts.append({"part_number": number, "etag": response.headers["ETag"]})
    return parts


async def complete(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    upload_id: str,
    parts: list[dict[str, Any]] | None = None,
) -> httpx.Response:
    body = None if parts is None else {"parts": parts}
    return await http.post(f"{url}/v1/uploads/{upload_id}/complete", headers=headers, json=body)


async def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


async def open_multipart_uploads(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [upload for upload in listing.get("Uploads", []) if upload["Key"] == key]


async def statuses(pg_pool: asyncpg.Pool, upload_id: str) -> tuple[str, str, str | None]:
    """``(document status, session status, failure reason)`` of an upload."""
    row = await pg_pool.fetchrow(
        "SELECT d.status AS document, s.status AS session, s.failure_reason"
        " FROM upload.documents d JOIN upload.upload_sessions s ON s.document_id = d.id WHERE d.id = $1",
        uuid.UUID(upload_id),
    )
    assert row is not None
    return row["document"], row["session"], row["failure_reason"]
