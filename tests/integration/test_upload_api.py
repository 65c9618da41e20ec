"""The upload API against real PostgreSQL, S3 and Kafka servers."""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from depot_common.auth import mint_token
from depot_common.events import DOCUMENTS_TOPIC
from depot_common.outbox import OutboxRelay
from depot_upload.settings import UploadSettings
from tests.kafka_helpers import published_events
from tests.multipart import multipart
from tests.upload_helpers import MIB, Auth, multipart_uploads, object_keys, unique_text, upload


async def test_upload_stores_bytes_row_and_outbox_event(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
    relay: OutboxRelay,
    kafka_bootstrap: str,
) -> None:
    """A 201 upload leaves the exact bytes under documents/<id>, a stored row and a document.stored outbox event
    (which the relay publishes)."""
    data = unique_text("hello depot")
    response = await upload(http, upload_api, auth("alice"), data)
    assert response.status_code == 201, response.text
    document = response.json()
    assert response.headers["Location"] == f"/v1/documents/{document['id']}"
    assert document["status"] == "stored"
    assert document["owner_id"] == "alice"
    assert document["size_bytes"] == len(data)
    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    assert document["content_type"] == "text/plain"
    obj = await s3.get_object(Bucket=upload_settings.s3_bucket, Key=f"documents/{document['id']}")
    assert await obj["Body"].read() == data
    row = await pg_pool.fetchrow(
        "SELECT status, version FROM upload.documents WHERE id = $1", uuid.UUID(document["id"])
    )
    assert row is not None
    assert (row["status"], row["version"]) == ("stored", 2)
    [event] = await published_events(kafka_bootstrap, DOCUMENTS_TOPIC, document["id"])
    assert event["type"] == "document.stored"
    assert event["specversion"] == "1.0"
    assert event["data"]["sha256"] == document["sha256"]
    assert event["data"]["object_key"] == f"documents/{document['id']}"
    assert event["data"]["version"] == 2


async def test_upload_larger_than_a_part_streams_as_multipart(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """A file larger than the part size is stored whole, with the SHA-256 of all its bytes."""
    data = os.urandom(11 * MIB + 123)
    response = await upload(http, upload_api, auth("alice"), data, "big.bin")
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    head = await s3.head_object(Bucket=upload_settings.s3_bucket, Key=f"documents/{document['id']}")
    assert head["ContentLength"] == len(data)


async def test_get_returns_own_document(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """GET /v1/documents/{id} returns the document JSON to its owner."""
    created = (await upload(http, upload_api, auth("alice"), unique_text())).json()
    response = await http.get(f"{upload_api}/v1/documents/{created['id']}", headers=auth("alice"))
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize("document_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_get_unknown_document_is_404(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, document_id: str
) -> None:
    """An id that names no document is a 404 with the error body."""
    response = await http.get(f"{upload_api}/v1/documents/{document_id}", headers=auth("alice"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_another_owners_document_is_404_not_403(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Bob asking for Alice's document gets 404, exactly like a missing one."""
    created = (await upload(http, upload_api, auth("alice"), unique_text())).json()
    response = await http.get(f"{upload_api}/v1/documents/{created['id']}", headers=auth("bob"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "missing_token"),
    ],
)
async def test_requests_without_a_valid_token_are_401(
    http: httpx.AsyncClient,
    upload_api: str,
    headers: dict[str, str],
    code: str,
    pg_pool: asyncpg.Pool,
    s3: Any,
    upload_settings: UploadSettings,
) -> None:
    """Missing, malformed or non-bearer credentials give 401 and store nothing: no row, no object, no event."""
    counts = (  # events: the outbox's id sequence, since a relay deletes the rows it published
        "SELECT (SELECT count(*) FROM upload.documents) AS documents,"
        " (SELECT last_value FROM upload.outbox_id_seq) AS events"
    )
    rows_before = await pg_pool.fetchrow(counts)
    keys_before = await object_keys(s3, upload_settings.s3_bucket)
    response = await upload(http, upload_api, headers, unique_text())
    assert response.status_code == 401
    assert response.json()["error"] == code
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await pg_pool.fetchrow(counts) == rows_before
    assert await object_keys(s3, upload_settings.s3_bucket) == keys_before


async def test_expired_or_foreign_tokens_are_401(
    http: httpx.AsyncClient, upload_api: str, stack_env: dict[str, str]
) -> None:
    """A token expired beyond the clock-skew leeway, or signed with another secret, is refused with 401."""
    expired = mint_token(stack_env["DEPOT_JWT_SECRET"], "alice", ttl=-120)  # beyond the 30 s leeway
    forged = mint_token(secrets.token_urlsafe(32), "alice")
    for token, code in ((expired, "token_expired"), (forged, "invalid_token")):
        response = await http.get(
            f"{upload_api}/v1/documents/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
        assert response.json()["error"] == code


async def test_same_content_twice_is_409_with_existing_id_and_one_object(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """Uploading content the owner already stored is 409 duplicate naming it; no second object or row remains."""
    data = unique_text("twice")
    first = (await upload(http, upload_api, auth("alice"), data, "a.txt")).json()
    before = await object_keys(s3, upload_settings.s3_bucket)
    second = await upload(http, upload_api, auth("alice"), data, "b.txt")
    assert second.status_code == 409
    assert second.json()["error"] == "duplicate"
    assert second.json()["existing_id"] == first["id"]
    assert second.headers["Location"] == f"/v1/documents/{first['id']}"
    assert await object_keys(s3, upload_settings.s3_bucket) == before
    sha = hashlib.sha256(data).hexdigest()
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.documents WHERE sha256 = $1", sha) == 1


async def test_same_content_by_another_owner_is_stored(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Dedup is per owner: Bob may store what Alice stored."""
    data = unique_text("shared")
    assert (await upload(http, upload_api, auth("alice"), data)).status_code == 201
    assert (await upload(http, upload_api, auth("bob"), data)).status_code == 201


@pytest.mark.parametrize(
    "filename",
    ["", "   ", "../etc/passwd", "a/b.txt", "a\\b.txt", "..", "x..y", "bad\x01name", "tab\tname", "nul\x00"],
)
async def test_unsafe_filenames_are_400(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, filename: str, pg_pool: asyncpg.Pool
) -> None:
    """Empty names, path separators, '..' and control characters are refused with 400 invalid_filename."""
    body, headers = multipart([("file", filename, unique_text())])
    response = await http.post(f"{upload_api}/v1/documents", content=body, headers={**headers, **auth("carol")})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_filename"
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.documents WHERE owner_id = 'carol'") == 0


async def test_missing_file_part_is_422(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """A multipart body without a 'file' part, or a body that is not multipart, is 422."""
    body, headers = multipart([("other", None, b"value")])
    response = await http.post(f"{upload_api}/v1/documents", content=body, headers={**headers, **auth("alice")})
    assert response.status_code == 422
    assert response.json()["error"] == "missing_file"
    response = await http.post(
        f"{upload_api}/v1/documents",
        content=b"{}",
        headers={"Content-Type": "application/json", **auth("alice")},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "missing_file"


async def test_oversized_upload_is_413_and_leaves_nothing(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """A file over DEPOT_MAX_UPLOAD_BYTES is 413; no object, part or row is left behind."""
    before = await object_keys(s3, upload_settings.s3_bucket)
    uploads_before = await multipart_uploads(s3, upload_settings.s3_bucket)
    data = os.urandom(upload_settings.max_upload_bytes + 1)
    response = await upload(http, upload_api, auth("dave"), data, "huge.bin")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await object_keys(s3, upload_settings.s3_bucket) == before
    assert await multipart_uploads(s3, upload_settings.s3_bucket) == uploads_before
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.documents WHERE owner_id = 'dave'") == 0


async def test_errors_carry_a_request_id(http: httpx.AsyncClient, upload_api: str) -> None:
    """X-Request-ID is echoed when given and generated when not."""
    given = await http.get(f"{upload_api}/v1/documents/x", headers={"X-Request-ID": "req-123"})
    assert given.headers["X-Request-ID"] == "req-123"
    generated = await http.get(f"{upload_api}/v1/documents/x")
    assert len(generated.headers["X-Request-ID"]) == 32


async def test_health_readiness_and_metrics(http: httpx.AsyncClient, upload_api: str) -> None:
    """/healthz, /readyz (all dependencies up) and /metrics answer."""
    assert (await http.get(f"{upload_api}/healthz")).json() == {"status": "ok"}
    ready = await http.get(f"{upload_api}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": True, "s3": True, "kafka": True}
    metrics = await http.get(f"{upload_api}/metrics")
    assert "depot_http_requests_total" in metrics.text
