"""Presigned uploads (SPEC §4) against real PostgreSQL and S3: the client PUTs straight to S3.

The session's ``upload_settings`` use a 5 MiB part size (the S3 minimum) and a 12 MiB
upload limit, so a multipart upload here has two or three parts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import structlog.testing
from botocore.exceptions import ClientError

from depot_upload.settings import UploadSettings

MIB = 1024 * 1024
Auth = Callable[..., dict[str, str]]


@pytest.fixture(autouse=True)
async def abort_leftover_uploads(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> AsyncIterator[None]:
    """After each test, abort the uploads it left pending, so no multipart upload outlives it."""
    yield
    rows = await pg_pool.fetch("SELECT document_id, owner_id FROM upload.upload_sessions WHERE status = 'pending'")
    for row in rows:
        response = await http.delete(f"{upload_api}/v1/uploads/{row['document_id']}", headers=auth(row["owner_id"]))
        assert response.status_code in (204, 409), response.text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


async def put_parts(http: httpx.AsyncClient, upload: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """PUT each part's bytes to its presigned URL, exactly as a client would; return the parts with ETags."""
    size = upload["part_size"]
    parts = []
    for part in upload["parts"]:
        number = part["part_number"]
        response = await http.put(part["url"], content=data[(number - 1) * size : number * size])
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


async def test_single_part_upload_is_one_presigned_put_then_stored(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """A file up to one part gets one presigned PUT URL (201); completing it returns the document as GET shows it."""
    data = os.urandom(64 * 1024)
    started = await start(http, upload_api, auth("alice"), data, filename="small.txt", content_type="text/plain")
    assert started.status_code == 201, started.text
    upload = started.json()
    assert set(upload) == {"upload_id", "expires_at", "parts", "part_size"}
    assert upload["part_size"] == upload_settings.part_size
    assert [part["part_number"] for part in upload["parts"]] == [1]
    assert "uploadId" not in upload["parts"][0]["url"]

    assert await put_parts(http, upload, data)
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["id"] == upload["upload_id"]
    assert (document["status"], document["owner_id"], document["filename"]) == ("stored", "alice", "small.txt")
    assert (document["size_bytes"], document["sha256"], document["content_type"]) == (
        len(data),
        sha256(data),
        "text/plain",
    )
    fetched = await http.get(f"{upload_api}/v1/documents/{document['id']}", headers=auth("alice"))
    assert fetched.json() == document
    obj = await s3.get_object(Bucket=upload_settings.s3_bucket, Key=f"documents/{document['id']}")
    assert await obj["Body"].read() == data


async def test_multipart_upload_is_assembled_verified_and_stored(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """A file above one part gets one presigned URL per 5 MiB part; completing with the ETags stores the exact bytes."""
    data = os.urandom(11 * MIB + 123)
    started = await start(http, upload_api, auth("alice"), data)
    assert started.status_code == 201, started.text
    upload = started.json()
    assert upload["part_size"] == 5 * MIB
    assert [part["part_number"] for part in upload["parts"]] == [1, 2, 3]
    key = f"documents/{upload['upload_id']}"

    parts = await put_parts(http, upload, data)
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    assert response.json()["sha256"] == sha256(data)
    obj = await s3.get_object(Bucket=upload_settings.s3_bucket, Key=key)
    assert obj["ContentType"] == "application/octet-stream"
    assert await obj["Body"].read() == data
    assert await open_multipart_uploads(s3, upload_settings.s3_bucket, key) == []


async def test_completed_upload_writes_a_document_stored_outbox_event(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """Completing an upload commits a document.stored event for it in the outbox."""
    data = os.urandom(1000)
    upload = (await start(http, upload_api, auth("alice"), data, filename="e.bin")).json()
    await put_parts(http, upload, data)
    assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200
    events = await pg_pool.fetch("SELECT value FROM upload.outbox WHERE key = $1", upload["upload_id"])
    assert [event["value"]["type"] for event in events] == ["document.stored"]
    data_ = events[0]["value"]["data"]
    assert data_["document_id"] == upload["upload_id"]
    assert data_["object_key"] == f"documents/{upload['upload_id']}"
    assert (data_["size_bytes"], data_["sha256"], data_["version"]) == (len(data), sha256(data), 2)


async def test_completing_twice_returns_the_same_document(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """A retried complete of a completed upload is 200 with the same document, not an error."""
    data = os.urandom(6 * MIB)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    parts = await put_parts(http, upload, data)
    first = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    again = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()


async def test_live_upload_of_the_same_content_is_returned_again(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """Starting the same content again while its upload is live is 200 with the same upload_id and working URLs."""
    data = os.urandom(7 * MIB)
    first = await start(http, upload_api, auth("alice"), data)
    second = await start(http, upload_api, auth("alice"), data, filename="again.bin")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["upload_id"] == first.json()["upload_id"]
    assert second.json()["expires_at"] == first.json()["expires_at"]
    assert len(second.json()["parts"]) == 2
    parts = await put_parts(http, second.json(), data)
    response = await complete(http, upload_api, auth("alice"), first.json()["upload_id"], parts)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "big.bin"


async def test_concurrent_starts_of_the_same_content_share_one_upload(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    pg_pool: asyncpg.Pool,
    s3: Any,
    upload_settings: UploadSettings,
) -> None:
    """Five starts of the same content held together at the per-content lock create one upload (one 201); the four
    that lose the race name it and leave no multipart upload behind."""
    data = os.urandom(6 * MIB)
    lock = f"upload:alice:{sha256(data)}"
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid::bigint = (hashtextextended($1, 0) >> 32) & 4294967295"
        " AND objid::bigint = hashtextextended($1, 0) & 4294967295"
    )
    listed = await s3.list_multipart_uploads(Bucket=upload_settings.s3_bucket)
    keys_before = {upload["Key"] for upload in listed.get("Uploads", [])}
    async with pg_pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
        try:
            with structlog.testing.capture_logs() as logs:
                starts = [asyncio.create_task(start(http, upload_api, auth("alice"), data)) for _ in range(5)]
                for _ in range(500):  # every start has passed its look-up and waits to create
                    if await pg_pool.fetchval(waiting, lock) == 5:
                        break
                    await asyncio.sleep(0.02)
                else:
                    pytest.fail("the five starts never waited together")
                await holder.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)
                responses = await asyncio.gather(*starts)
        finally:
            await holder.execute("SELECT pg_advisory_unlock_all()")
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 200, 201]
    upload_ids = {response.json()["upload_id"] for response in responses}
    assert len(upload_ids) == 1
    count = await pg_pool.fetchval("SELECT count(*) FROM upload.upload_sessions WHERE sha256 = $1", sha256(data))
    assert count == 1
    assert [entry["upload_id"] for entry in logs if entry["event"] == "upload.start_race_lost"] == [*upload_ids] * 4
    listed = await s3.list_multipart_uploads(Bucket=upload_settings.s3_bucket)
    in_progress = {upload["Key"] for upload in listed.get("Uploads", [])} - keys_before
    assert in_progress == {f"documents/{upload_id}" for upload_id in upload_ids}


async def test_content_already_stored_is_409_duplicate_with_location(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """Starting an upload of content the owner already stored is 409 duplicate naming the document."""
    data = os.urandom(2000)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    await put_parts(http, upload, data)
    assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200

    response = await start(http, upload_api, auth("alice"), data, filename="copy.bin")
    assert response.status_code == 409
    assert response.json()["error"] == "duplicate"
    assert response.json()["existing_id"] == upload["upload_id"]
    assert response.headers["Location"] == f"/v1/documents/{upload['upload_id']}"
    assert (await start(http, upload_api, auth("bob"), data)).status_code == 201


async def test_content_stored_meanwhile_is_409_duplicate_at_complete(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """Content stored another way after the upload started makes complete 409 duplicate, and its object is removed."""
    data = os.urandom(3000)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    direct = await http.post(
        f"{upload_api}/v1/documents", headers=auth("alice"), files={"file": ("same.bin", data, "application/x-bin")}
    )
    assert direct.status_code == 201, direct.text
    await put_parts(http, upload, data)

    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert response.status_code == 409
    assert response.json()["existing_id"] == direct.json()["id"]
    assert response.headers["Location"] == f"/v1/documents/{direct.json()['id']}"
    assert not await object_exists(s3, upload_settings.s3_bucket, f"documents/{upload['upload_id']}")
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "duplicate")


async def test_complete_before_the_bytes_arrive_is_409_not_uploaded(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """Completing before the PUT is 409 not_uploaded and leaves the upload pending, so it can be completed later."""
    data = os.urandom(4000)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    early = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert early.status_code == 409
    assert early.json()["error"] == "not_uploaded"
    assert await statuses(pg_pool, upload["upload_id"]) == ("pending", "pending", None)

    await put_parts(http, upload, data)
    assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200


async def test_multipart_complete_with_missing_parts_is_409_not_uploaded(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """Completing a multipart upload naming a part that was never PUT is 409 not_uploaded."""
    data = os.urandom(6 * MIB)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    first = upload["parts"][0]
    put = await http.put(first["url"], content=data[: upload["part_size"]])
    parts = [{"part_number": 1, "etag": put.headers["ETag"]}, {"part_number": 2, "etag": '"0123456789abcdef"'}]
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert response.status_code == 409
    assert response.json()["error"] == "not_uploaded"


async def test_multipart_complete_without_parts_is_422(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Completing a multipart upload without listing its parts is 422 parts_required."""
    data = os.urandom(6 * MIB)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert response.status_code == 422
    assert response.json()["error"] == "parts_required"


@pytest.mark.parametrize("uploaded", ["other bytes, same size", "fewer bytes"])
async def test_bytes_not_matching_the_declaration_are_422_and_removed(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
    uploaded: str,
) -> None:
    """Bytes whose SHA-256 or size differ from the declaration are 422 checksum_mismatch: row failed, object gone."""
    declared = os.urandom(5000)
    actual = os.urandom(5000) if uploaded == "other bytes, same size" else declared[:4000]
    upload = (await start(http, upload_api, auth("alice"), declared)).json()
    await put_parts(http, upload, actual)

    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "checksum_mismatch"
    assert (body["expected_size"], body["actual_size"]) == (5000, len(actual))
    assert not await object_exists(s3, upload_settings.s3_bucket, f"documents/{upload['upload_id']}")
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "checksum_mismatch")
    retry = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert (retry.status_code, retry.json()["error"]) == (410, "upload_failed")


async def test_expired_upload_is_410_and_cleaned_up(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """Completing after expires_at is 410 upload_expired: the row is failed and the multipart upload aborted."""
    data = os.urandom(6 * MIB)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    key = f"documents/{upload['upload_id']}"
    parts = await put_parts(http, upload, data)
    assert len(await open_multipart_uploads(s3, upload_settings.s3_bucket, key)) == 1
    await pg_pool.execute(
        "UPDATE upload.upload_sessions SET expires_at = now() - interval '1 second' WHERE document_id = $1",
        uuid.UUID(upload["upload_id"]),
    )

    response = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert response.status_code == 410
    assert response.json()["error"] == "upload_expired"
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "expired")
    assert await open_multipart_uploads(s3, upload_settings.s3_bucket, key) == []
    assert not await object_exists(s3, upload_settings.s3_bucket, key)
    restarted = await start(http, upload_api, auth("alice"), data)
    assert restarted.status_code == 201
    assert restarted.json()["upload_id"] != upload["upload_id"]


@pytest.mark.parametrize("filename", ["", "../etc/passwd", "a/b.txt", "nul\x00.txt", "tab\there.txt"])
async def test_unsafe_filename_is_400(http: httpx.AsyncClient, upload_api: str, auth: Auth, filename: str) -> None:
    """An empty filename or one with a path separator, '..' or control characters is 400 invalid_filename."""
    response = await start(http, upload_api, auth("alice"), b"x" * 10, filename=filename)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filename"


async def test_declared_size_above_the_limit_is_413(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, upload_settings: UploadSettings
) -> None:
    """Declaring more than DEPOT_MAX_UPLOAD_BYTES is 413 payload_too_large, before any URL is issued."""
    response = await start(
        http, upload_api, auth("alice"), b"x", size_bytes=upload_settings.max_upload_bytes + 1, sha256="a" * 64
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"sha256": "A" * 64}, "invalid_sha256"),
        ({"sha256": "a" * 63}, "invalid_sha256"),
        ({"sha256": "g" * 64}, "invalid_sha256"),
        ({"size_bytes": 0}, "invalid_size"),
        ({"sha256": None}, "validation_error"),
    ],
)
async def test_malformed_declaration_is_422(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, overrides: dict[str, Any], code: str
) -> None:
    """A sha256 that is not 64 lowercase hex digits, a size below 1 or a missing field is 422."""
    response = await start(http, upload_api, auth("alice"), b"some bytes", **overrides)
    assert response.status_code == 422
    assert response.json()["error"] == code


async def test_another_owners_upload_is_404(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """Bob can neither complete nor abort Alice's upload: 404, as for an unknown id, and it stays pending."""
    data = os.urandom(100)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    await put_parts(http, upload, data)
    for upload_id in (upload["upload_id"], str(uuid.uuid4()), "not-a-uuid"):
        completed = await complete(http, upload_api, auth("bob"), upload_id)
        deleted = await http.delete(f"{upload_api}/v1/uploads/{upload_id}", headers=auth("bob"))
        assert (completed.status_code, deleted.status_code) == (404, 404)
        assert completed.json()["error"] == "not_found"
    assert await statuses(pg_pool, upload["upload_id"]) == ("pending", "pending", None)


async def test_uploads_require_a_token(http: httpx.AsyncClient, upload_api: str) -> None:
    """Every /v1/uploads endpoint is 401 without a bearer token."""
    assert (await start(http, upload_api, {}, b"x")).status_code == 401
    assert (await complete(http, upload_api, {}, str(uuid.uuid4()))).status_code == 401
    assert (await http.delete(f"{upload_api}/v1/uploads/{uuid.uuid4()}")).status_code == 401


async def test_delete_aborts_the_multipart_upload_and_fails_the_row(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """DELETE is 204: the row is failed (with a document.failed event) and S3 holds no multipart upload for the key."""
    data = os.urandom(6 * MIB)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    key = f"documents/{upload['upload_id']}"
    await put_parts(http, upload, data)
    assert len(await open_multipart_uploads(s3, upload_settings.s3_bucket, key)) == 1

    response = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert response.status_code == 204
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "aborted")
    assert await open_multipart_uploads(s3, upload_settings.s3_bucket, key) == []
    assert not await object_exists(s3, upload_settings.s3_bucket, key)
    event = await pg_pool.fetchval("SELECT value FROM upload.outbox WHERE key = $1", upload["upload_id"])
    assert (event["type"], event["data"]["reason"]) == ("document.failed", "upload_aborted")
    again = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert again.status_code == 204


async def test_delete_removes_an_object_already_put(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """DELETE of a single-part upload whose bytes were already PUT removes the object."""
    data = os.urandom(100)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    key = f"documents/{upload['upload_id']}"
    await put_parts(http, upload, data)
    assert await object_exists(s3, upload_settings.s3_bucket, key)
    response = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert response.status_code == 204
    assert not await object_exists(s3, upload_settings.s3_bucket, key)


async def test_complete_after_delete_is_410_upload_aborted(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """An aborted upload can never complete: 410 upload_aborted, even when the bytes are PUT afterwards."""
    data = os.urandom(100)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    deleted = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert deleted.status_code == 204
    await put_parts(http, upload, data)
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    assert response.status_code == 410
    assert response.json()["error"] == "upload_aborted"
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "aborted")


async def test_delete_of_a_completed_upload_is_409(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """DELETE of a completed upload is 409 upload_completed pointing at the document, which stays readable."""
    data = os.urandom(100)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    await put_parts(http, upload, data)
    assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200
    response = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert response.status_code == 409
    assert response.json()["error"] == "upload_completed"
    assert response.headers["Location"] == f"/v1/documents/{upload['upload_id']}"
    document = await http.get(f"{upload_api}/v1/documents/{upload['upload_id']}", headers=auth("alice"))
    assert document.json()["status"] == "stored"
