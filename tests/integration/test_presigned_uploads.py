"""Presigned uploads (docs/api.md) against real PostgreSQL and S3: the client PUTs straight to S3.

The session's ``upload_settings`` use a 5 MiB part size (the S3 minimum) and a 12 MiB
upload limit, so a multipart upload here has two or three parts.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import structlog.testing
from botocore.exceptions import ClientError

from depot_common.events import DOCUMENTS_TOPIC
from depot_common.outbox import OutboxRelay
from depot_upload.settings import UploadSettings
from tests.kafka_helpers import published_events
from tests.sigv4 import signature_matches, signed_headers
from tests.upload_helpers import (
    MIB,
    Auth,
    b64_sha256,
    complete,
    object_exists,
    open_multipart_uploads,
    put_part,
    put_parts,
    sha256,
    start,
    statuses,
)


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


@pytest.fixture(scope="module")
async def s3_checks_checksums(s3: Any, upload_settings: UploadSettings) -> bool:
    """Whether this S3 refuses a PUT whose ``x-amz-checksum-sha256`` is not its body's.

    AWS S3 and MinIO do (400 ``BadDigest``); moto 5 does not.
    """
    key = f"probe/{uuid.uuid4()}"
    try:
        await s3.put_object(Bucket=upload_settings.s3_bucket, Key=key, Body=b"probe", ChecksumSHA256=b64_sha256(b"x"))
    except ClientError as error:
        if error.response["Error"]["Code"] != "BadDigest":
            raise
        return True
    await s3.delete_object(Bucket=upload_settings.s3_bucket, Key=key)
    return False


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
    assert set(upload["parts"][0]) == {"part_number", "url", "headers"}
    assert upload["parts"][0]["headers"] == {"If-None-Match": "*", "x-amz-checksum-sha256": b64_sha256(data)}
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


async def test_single_part_url_is_signed_with_if_none_match_and_the_declared_checksum(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, upload_settings: UploadSettings
) -> None:
    """The single-part URL's signature holds only with `headers` as given: without them, or another checksum, 403."""
    data, other = os.urandom(2048), os.urandom(2048)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    (part,) = upload["parts"]
    url, headers = part["url"], part["headers"]
    assert sorted(signed_headers(url)) == ["host", "if-none-match", "x-amz-checksum-sha256"]
    assert upload_settings.aws_secret_access_key is not None
    secret = upload_settings.aws_secret_access_key.get_secret_value()

    def valid(sent: dict[str, str], *, method: str = "PUT", key: str = secret) -> bool:
        return signature_matches(url, method=method, headers=sent, secret_key=key)

    assert valid(headers)
    assert not valid(headers, key=secret + "x")  # the check itself can fail
    assert not valid({})
    assert not valid({"x-amz-checksum-sha256": headers["x-amz-checksum-sha256"]})  # no If-None-Match
    assert not valid({**headers, "x-amz-checksum-sha256": b64_sha256(other)})  # the checksum of other bytes
    assert not valid(headers, method="DELETE")


@pytest.mark.parametrize("uploaded", ["other bytes, same size", "fewer bytes"])
async def test_single_part_put_of_other_bytes_never_becomes_a_document(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
    s3_checks_checksums: bool,
    uploaded: str,
) -> None:
    """Undeclared bytes never become a document: S3 refuses the PUT (400 BadDigest), or (moto) complete is 422.

    S3 checks the signed ``x-amz-checksum-sha256``: complete then finds nothing (409) and the
    right bytes can still be sent. moto stores any bytes, so Depot's own re-hash refuses them.
    """
    declared = os.urandom(5000)
    actual = os.urandom(5000) if uploaded == "other bytes, same size" else declared[:4000]
    upload = (await start(http, upload_api, auth("alice"), declared)).json()
    (part,) = upload["parts"]
    key = f"documents/{upload['upload_id']}"
    put = await http.put(part["url"], content=actual, headers=part["headers"])
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"])
    if s3_checks_checksums:
        assert (put.status_code, "BadDigest" in put.text) == (400, True), put.text
        assert (response.status_code, response.json()["error"]) == (409, "not_uploaded")
        assert await statuses(pg_pool, upload["upload_id"]) == ("pending", "pending", None)
        assert (await http.put(part["url"], content=declared, headers=part["headers"])).status_code == 200
        assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200
    else:
        assert put.status_code == 200, put.text
        assert (response.status_code, response.json()["error"]) == (422, "checksum_mismatch")
        assert not await object_exists(s3, upload_settings.s3_bucket, key)
        assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "checksum_mismatch")


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
    assert all(part["headers"] == {} and signed_headers(part["url"]) == ["host"] for part in upload["parts"])
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
    http: httpx.AsyncClient, upload_api: str, auth: Auth, relay: OutboxRelay, kafka_bootstrap: str
) -> None:
    """Completing an upload commits a document.stored event for it in the outbox (which the relay publishes)."""
    data = os.urandom(1000)
    upload = (await start(http, upload_api, auth("alice"), data, filename="e.bin")).json()
    await put_parts(http, upload, data)
    assert (await complete(http, upload_api, auth("alice"), upload["upload_id"])).status_code == 200
    events = await published_events(kafka_bootstrap, DOCUMENTS_TOPIC, upload["upload_id"])
    assert [event["type"] for event in events] == ["document.stored"]
    data_ = events[0]["data"]
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
    put = await put_part(http, upload, upload["parts"][0], data)
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
async def test_multipart_bytes_not_matching_the_declaration_are_422_and_removed(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
    uploaded: str,
) -> None:
    """Multipart bytes (no checksum per part) not as declared are 422 checksum_mismatch; row failed, bytes gone."""
    declared = os.urandom(6 * MIB)
    actual = os.urandom(6 * MIB) if uploaded == "other bytes, same size" else declared[: 6 * MIB - 1000]
    upload = (await start(http, upload_api, auth("alice"), declared)).json()
    parts = await put_parts(http, upload, actual)

    response = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "checksum_mismatch"
    assert (body["expected_size"], body["actual_size"]) == (6 * MIB, len(actual))
    key = f"documents/{upload['upload_id']}"
    assert not await object_exists(s3, upload_settings.s3_bucket, key)
    assert await open_multipart_uploads(s3, upload_settings.s3_bucket, key) == []
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "checksum_mismatch")
    retry = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
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
    relay: OutboxRelay,
    kafka_bootstrap: str,
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
    [event] = await published_events(kafka_bootstrap, DOCUMENTS_TOPIC, upload["upload_id"])
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


@pytest.mark.parametrize("size", [100, 6 * MIB], ids=["single part", "multipart"])
async def test_complete_after_delete_is_410_upload_aborted_and_leaves_no_bytes(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
    size: int,
) -> None:
    """An aborted upload never completes (410): its part URLs are dead; bytes PUT to its single URL are removed."""
    data = os.urandom(size)
    upload = (await start(http, upload_api, auth("alice"), data)).json()
    key = f"documents/{upload['upload_id']}"
    deleted = await http.delete(f"{upload_api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))
    assert deleted.status_code == 204
    puts = [await put_part(http, upload, part, data) for part in upload["parts"]]
    if size > upload["part_size"]:  # S3 forgot the aborted multipart upload: its part URLs are refused
        assert all(put.status_code >= 400 for put in puts), [put.status_code for put in puts]
    else:  # a plain presigned PUT cannot be revoked before it expires: S3 takes the bytes
        assert [put.status_code for put in puts] == [200]
        assert await object_exists(s3, upload_settings.s3_bucket, key)
    parts = [{"part_number": p["part_number"], "etag": '"0"'} for p in upload["parts"]] if size > 100 else None
    response = await complete(http, upload_api, auth("alice"), upload["upload_id"], parts)
    assert response.status_code == 410
    assert response.json()["error"] == "upload_aborted"
    assert await statuses(pg_pool, upload["upload_id"]) == ("failed", "failed", "aborted")
    assert not await object_exists(s3, upload_settings.s3_bucket, key)
    assert await open_multipart_uploads(s3, upload_settings.s3_bucket, key) == []


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
