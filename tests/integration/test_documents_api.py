"""The rest of docs/api.md's upload API on real servers: idempotency, batch, listing, content, delete, status, CORS."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
import structlog.testing

from depot_common.events import DOCUMENTS_TOPIC
from depot_common.outbox import OutboxRelay
from depot_upload.settings import UploadSettings
from tests.kafka_helpers import published_events
from tests.multipart import multipart
from tests.upload_helpers import Auth, object_keys, owner, unique_text, upload

# --- Idempotency-Key ----------------------------------------------------------------


async def test_a_retry_with_the_same_key_and_content_replays_the_first_response(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """Same Idempotency-Key and same bytes: 201 with the same document, nothing stored twice."""
    headers = {**auth("alice"), "Idempotency-Key": f"key-{secrets.token_hex(8)}"}
    data = unique_text("idempotent")
    first = await upload(http, upload_api, headers, data)
    keys = await object_keys(s3, upload_settings.s3_bucket)
    second = await upload(http, upload_api, headers, data)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await object_keys(s3, upload_settings.s3_bucket) == keys


async def test_the_same_key_with_different_content_is_422(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Same Idempotency-Key, different bytes: 422 idempotency_key_reused."""
    headers = {**auth("alice"), "Idempotency-Key": f"key-{secrets.token_hex(8)}"}
    assert (await upload(http, upload_api, headers, unique_text())).status_code == 201
    response = await upload(http, upload_api, headers, unique_text())
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"


async def test_keys_are_scoped_to_their_owner(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Bob's use of a key Alice used is a fresh request, not a replay of Alice's document."""
    key = f"key-{secrets.token_hex(8)}"
    data = unique_text()
    alice = await upload(http, upload_api, {**auth("alice"), "Idempotency-Key": key}, data)
    bob = await upload(http, upload_api, {**auth("bob"), "Idempotency-Key": key}, data)
    assert bob.status_code == 201
    assert bob.json()["id"] != alice.json()["id"]
    assert bob.json()["owner_id"] == "bob"


async def stalled_upload(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], data: bytes, release: asyncio.Event
) -> httpx.Response:
    """POST /v1/documents whose body stops after the file's first byte until ``release`` is set."""
    boundary = "stall" + secrets.token_hex(6)

    async def body() -> AsyncIterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="race.txt"\r\n\r\n'.encode()
        yield data[:1]
        await release.wait()
        yield data[1:] + f"\r\n--{boundary}--\r\n".encode()

    content_type = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await http.post(f"{url}/v1/documents", content=body(), headers={**headers, **content_type})


async def overlapping_uploads(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], data: bytes, pool: asyncpg.Pool, owner_id: str
) -> list[httpx.Response]:
    """Two uploads of ``data`` held mid-body until both have their pending row, then finished together."""
    release = asyncio.Event()
    requests = [asyncio.create_task(stalled_upload(http, url, headers, data, release)) for _ in range(2)]
    query = "SELECT count(*) FROM upload.documents WHERE owner_id = $1 AND status = 'pending'"
    for _ in range(500):
        if await pool.fetchval(query, owner_id) == 2:
            break
        assert not any(request.done() for request in requests), [r.result().text for r in requests if r.done()]
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the two uploads never were in flight together")
    release.set()
    return list(await asyncio.gather(*requests))


async def test_concurrent_retries_with_one_key_store_once(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """Two requests with the same key and content, both in flight at once: both get 201 with one document, the
    loser through the idempotency race branch."""
    me = owner()
    headers = {**auth(me), "Idempotency-Key": f"key-{secrets.token_hex(8)}"}
    data = unique_text()
    with structlog.testing.capture_logs() as logs:
        responses = await overlapping_uploads(http, upload_api, headers, data, pg_pool, me)
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    sha = hashlib.sha256(data).hexdigest()
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.documents WHERE sha256 = $1", sha) == 1
    races = [entry for entry in logs if entry["event"] == "upload.idempotency_race"]
    assert [entry["document_id"] for entry in races] == [responses[0].json()["id"]]


async def test_a_malformed_idempotency_key_is_400(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """A key with spaces or control characters is refused with 400 invalid_idempotency_key."""
    response = await upload(http, upload_api, {**auth("alice"), "Idempotency-Key": "has space"}, unique_text())
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_idempotency_key"


# --- batch ---------------------------------------------------------------------------


async def test_batch_handles_each_file_alone(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, upload_settings: UploadSettings
) -> None:
    """A batch with good, badly named, duplicate and oversized files: 207 with one result each, the good ones stored."""
    good, again = unique_text("batch-1"), unique_text("batch-2")
    body, headers = multipart(
        [
            ("files", "one.txt", good),
            ("files", "../escape.txt", unique_text()),
            ("files", "dup.txt", good),
            ("files", "big.bin", b"x" * (upload_settings.max_upload_bytes + 1)),
            ("files", "two.txt", again),
        ]
    )
    response = await http.post(f"{upload_api}/v1/documents:batch", content=body, headers={**headers, **auth("alice")})
    assert response.status_code == 207
    results = response.json()["results"]
    assert [(r["filename"], r["status"]) for r in results] == [
        ("one.txt", 201),
        ("../escape.txt", 400),
        ("dup.txt", 409),
        ("big.bin", 413),
        ("two.txt", 201),
    ]
    assert results[1]["error"]["error"] == "invalid_filename"
    assert results[2]["error"]["existing_id"] == results[0]["document"]["id"]
    assert results[3]["error"]["error"] == "payload_too_large"
    for index in (0, 4):
        document = results[index]["document"]
        fetched = await http.get(f"{upload_api}/v1/documents/{document['id']}", headers=auth("alice"))
        assert fetched.json()["status"] == "stored"


async def test_batch_refuses_the_files_beyond_the_batch_limit(
    make_settings: Callable[..., Any], http: httpx.AsyncClient, auth: Auth, pg_pool: asyncpg.Pool, s3: Any
) -> None:
    """With DEPOT_BATCH_MAX_FILES=2, a batch of four stores the first two and answers 400 batch_limit_exceeded for
    the rest, storing nothing of them."""
    from depot_upload.bootstrap import build_app
    from tests.conftest import serve

    settings = make_settings(UploadSettings, batch_max_files=2)
    files = [unique_text(f"limit-{n}") for n in range(4)]
    body, headers = multipart([("files", f"f{n}.txt", data) for n, data in enumerate(files)])
    me = owner()
    before = await object_keys(s3, settings.s3_bucket)
    async with serve(build_app(settings)) as url:
        response = await http.post(f"{url}/v1/documents:batch", content=body, headers={**headers, **auth(me)})
    assert response.status_code == 207
    results = response.json()["results"]
    assert [(r["filename"], r["status"]) for r in results] == [
        ("f0.txt", 201),
        ("f1.txt", 201),
        ("f2.txt", 400),
        ("f3.txt", 400),
    ]
    assert [r["error"]["error"] for r in results[2:]] == ["batch_limit_exceeded"] * 2
    rows = await pg_pool.fetch("SELECT sha256, status FROM upload.documents WHERE owner_id = $1", me)
    assert sorted((r["sha256"], r["status"]) for r in rows) == sorted(
        (hashlib.sha256(data).hexdigest(), "stored") for data in files[:2]
    )
    new_keys = await object_keys(s3, settings.s3_bucket) - before
    assert new_keys == {f"documents/{r['document']['id']}" for r in results[:2]}


async def test_batch_without_files_is_422(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """A batch body with no file parts is 422 missing_file."""
    body, headers = multipart([("note", None, b"nothing")])
    response = await http.post(f"{upload_api}/v1/documents:batch", content=body, headers={**headers, **auth("alice")})
    assert response.status_code == 422
    assert response.json()["error"] == "missing_file"


# --- listing -----------------------------------------------------------------------


async def test_listing_pages_newest_first_with_a_cursor(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Keyset pages return every live document of the caller exactly once, newest first, and only theirs."""
    me = owner()
    created = [(await upload(http, upload_api, auth(me), unique_text())).json()["id"] for _ in range(5)]
    await upload(http, upload_api, auth(owner()), unique_text())
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{upload_api}/v1/documents", params=params, headers=auth(me))).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


@pytest.mark.parametrize("params", [{"cursor": "garbage"}, {"cursor": "eyJ0IjogMX0"}])
async def test_a_bad_cursor_is_400(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, params: dict[str, str]
) -> None:
    """A cursor this API did not issue is 400 invalid_cursor."""
    response = await http.get(f"{upload_api}/v1/documents", params=params, headers=auth("alice"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
async def test_an_out_of_range_limit_is_422(http: httpx.AsyncClient, upload_api: str, auth: Auth, limit: str) -> None:
    """limit outside 1..100 is a 422 validation error."""
    response = await http.get(f"{upload_api}/v1/documents", params={"limit": limit}, headers=auth("alice"))
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


# --- content -----------------------------------------------------------------------


async def test_content_streams_the_exact_bytes_with_headers(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """GET …/content returns the bytes with Content-Type, an attachment Content-Disposition and the SHA-256 ETag."""
    data = unique_text("content")
    created = (await upload(http, upload_api, auth("alice"), data, "résumé notes.txt")).json()
    response = await http.get(f"{upload_api}/v1/documents/{created['id']}/content", headers=auth("alice"))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ notes.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20notes.txt"
    )
    assert response.headers["ETag"] == f'"{created["sha256"]}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_content_redirect_is_a_working_short_lived_presigned_url(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """?redirect=true answers 307 to a presigned GET that serves the bytes."""
    data = unique_text("redirect")
    created = (await upload(http, upload_api, auth("alice"), data)).json()
    response = await http.get(
        f"{upload_api}/v1/documents/{created['id']}/content", params={"redirect": "true"}, headers=auth("alice")
    )
    assert response.status_code == 307
    location = response.headers["Location"]
    assert "X-Amz-Expires=300" in location
    fetched = await http.get(location)
    assert fetched.status_code == 200
    assert fetched.content == data


async def test_content_of_another_owners_document_is_404(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """Bob can neither stream nor get a URL for Alice's bytes."""
    created = (await upload(http, upload_api, auth("alice"), unique_text())).json()
    for params in ({}, {"redirect": "true"}):
        response = await http.get(
            f"{upload_api}/v1/documents/{created['id']}/content", params=params, headers=auth("bob")
        )
        assert response.status_code == 404


async def test_content_whose_bytes_are_lost_is_503(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, s3: Any, upload_settings: UploadSettings
) -> None:
    """A stored document whose object vanished answers 503 content_unavailable, not a 500."""
    created = (await upload(http, upload_api, auth("alice"), unique_text())).json()
    await s3.delete_object(Bucket=upload_settings.s3_bucket, Key=f"documents/{created['id']}")
    response = await http.get(f"{upload_api}/v1/documents/{created['id']}/content", headers=auth("alice"))
    assert response.status_code == 503
    assert response.json()["error"] == "content_unavailable"


# --- delete ------------------------------------------------------------------------


async def test_delete_makes_the_document_unreadable_and_emits_an_event(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    relay: OutboxRelay,
    kafka_bootstrap: str,
) -> None:
    """DELETE → 204; then GET, content and a second DELETE are 404, the object is gone and document.deleted
    is in the outbox (the relay publishes it)."""
    created = (await upload(http, upload_api, auth("alice"), unique_text())).json()
    url = f"{upload_api}/v1/documents/{created['id']}"
    assert (await http.delete(url, headers=auth("bob"))).status_code == 404
    assert (await http.delete(url, headers=auth("alice"))).status_code == 204
    assert (await http.get(url, headers=auth("alice"))).status_code == 404
    assert (await http.get(f"{url}/content", headers=auth("alice"))).status_code == 404
    assert (await http.delete(url, headers=auth("alice"))).status_code == 404
    assert f"documents/{created['id']}" not in await object_keys(s3, upload_settings.s3_bucket)
    [event] = await published_events(kafka_bootstrap, DOCUMENTS_TOPIC, created["id"], event_type="document.deleted")
    assert event["data"] == {"document_id": created["id"], "owner_id": "alice", "version": 3}


async def test_deleted_content_can_be_uploaded_again(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """After deleting a document its content is no longer a duplicate."""
    data = unique_text()
    created = (await upload(http, upload_api, auth("alice"), data)).json()
    await http.delete(f"{upload_api}/v1/documents/{created['id']}", headers=auth("alice"))
    assert (await upload(http, upload_api, auth("alice"), data)).status_code == 201


# --- status, CORS ------------------------------------------------------------------


async def test_status_reports_backlog_and_the_callers_pending_uploads(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool, relay: OutboxRelay
) -> None:
    """GET /v1/status reports exactly the unpublished rows of upload.outbox and the age of the oldest, and counts
    only the caller's pending uploads."""
    me = owner()
    await pg_pool.execute(
        "INSERT INTO upload.documents (id, owner_id, filename, content_type, object_key, status)"
        " VALUES ($1, $2, 'p.txt', 'text/plain', $3, 'pending')",
        doc := uuid.uuid4(),
        me,
        f"documents/{doc}",
    )
    published = (await upload(http, upload_api, auth(me), unique_text("published"))).json()["id"]
    query = "SELECT count(*) = 0 FROM upload.outbox WHERE key = $1"
    for _ in range(200):  # the relay runs: it publishes (deletes) what it can
        if await pg_pool.fetchval(query, published):
            break
        await asyncio.sleep(0.05)
    async with pg_pool.acquire() as conn:
        # Lock every unpublished row (ours among them): a relay may send them but cannot mark them, so the
        # backlog stands still while it is compared.
        for _ in range(20):
            created = (await upload(http, upload_api, auth(me), unique_text("status"))).json()
            held = conn.transaction()
            await held.start()
            locked = await conn.fetch("SELECT key FROM upload.outbox FOR UPDATE")
            if created["id"] in {row["key"] for row in locked}:
                break
            await held.rollback()
        else:
            pytest.fail("the relay published every new event before the test could hold one")
        assert await conn.fetchval(query, published)
        try:
            expected = await conn.fetchrow(
                "SELECT count(*) AS n, extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS age"
                " FROM upload.outbox"
            )
            started = time.monotonic()
            body = (await http.get(f"{upload_api}/v1/status", headers=auth(me))).json()
            elapsed = time.monotonic() - started
        finally:
            await held.rollback()
    assert body["pending_uploads"] == 1
    assert body["outbox_backlog"] == expected["n"] >= 1
    assert expected["age"] - 0.01 <= body["oldest_unpublished_age_s"] <= expected["age"] + elapsed + 0.01
    assert (await http.get(f"{upload_api}/v1/status", headers=auth(owner()))).json()["pending_uploads"] == 0
    assert (await http.get(f"{upload_api}/v1/status")).status_code == 401


async def test_cors_allows_only_the_configured_origins(
    make_settings: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    """A preflight from an allowed origin gets CORS headers exposing Location; another origin gets none."""
    from depot_upload.bootstrap import build_app
    from tests.conftest import serve

    settings = make_settings(UploadSettings, allowed_origins="https://app.example, https://admin.example")
    async with serve(build_app(settings)) as url:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        allowed = await http.options(f"{url}/v1/documents", headers={"Origin": "https://app.example", **preflight})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        denied = await http.options(f"{url}/v1/documents", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers
        simple = await http.get(f"{url}/healthz", headers={"Origin": "https://admin.example"})
        assert "Location" in simple.headers["access-control-expose-headers"]


# --- concurrency -------------------------------------------------------------------


async def test_simultaneous_identical_uploads_store_exactly_one(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    pg_pool: asyncpg.Pool,
) -> None:
    """Two uploads of the same content by one owner, both in flight at once: one 201, one 409 decided by the
    unique index, one object in S3."""
    me = owner()
    data = unique_text("race")
    before = await object_keys(s3, upload_settings.s3_bucket)
    with structlog.testing.capture_logs() as logs:
        responses = await overlapping_uploads(http, upload_api, auth(me), data, pg_pool, me)
    assert sorted(r.status_code for r in responses) == [201, 409]
    winner = next(r for r in responses if r.status_code == 201).json()["id"]
    assert next(r for r in responses if r.status_code == 409).json()["existing_id"] == winner
    assert [entry["sha256"] for entry in logs if entry["event"] == "upload.duplicate"] == [
        hashlib.sha256(data).hexdigest()
    ]
    assert await object_keys(s3, upload_settings.s3_bucket) - before == {f"documents/{winner}"}


async def test_owners_do_not_block_each_other(http: httpx.AsyncClient, upload_api: str, auth: Auth) -> None:
    """While Alice's upload is stalled mid-stream, Bob's upload completes."""
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first half "
        await release.wait()
        yield b"second half"

    async def alice() -> httpx.Response:
        boundary = "stall" + secrets.token_hex(6)

        async def body() -> AsyncIterator[bytes]:
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\n'.encode()
            async for chunk in slow_body():
                yield chunk
            yield f"{secrets.token_hex(8)}\r\n--{boundary}--\r\n".encode()

        headers = {**auth("alice"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return await http.post(f"{upload_api}/v1/documents", content=body(), headers=headers)

    stalled = asyncio.create_task(alice())
    await asyncio.sleep(0.3)
    bob = await asyncio.wait_for(upload(http, upload_api, auth("bob"), unique_text()), 5)
    assert bob.status_code == 201
    assert not stalled.done()
    release.set()
    assert (await stalled).status_code == 201


async def test_metrics_count_uploads_by_outcome_and_bytes_stored(
    http: httpx.AsyncClient, upload_api: str, auth: Auth
) -> None:
    """/metrics exposes uploads by outcome, bytes stored and request latencies, and they move with traffic."""

    def sample(text: str, name: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = (await http.get(f"{upload_api}/metrics")).text
    data = unique_text("metrics")
    await upload(http, upload_api, auth("alice"), data)
    await upload(http, upload_api, auth("alice"), data)
    after = (await http.get(f"{upload_api}/metrics")).text
    stored, duplicate = 'depot_uploads_total{outcome="stored"}', 'depot_uploads_total{outcome="duplicate"}'
    assert sample(after, stored) == sample(before, stored) + 1
    assert sample(after, duplicate) == sample(before, duplicate) + 1
    bytes_stored = "depot_upload_bytes_stored_total"
    assert sample(after, bytes_stored) == sample(before, bytes_stored) + len(data)
    assert 'depot_http_request_duration_seconds_count{method="POST",route="/v1/documents"}' in after


async def test_idempotency_keys_are_forgotten_after_their_retention(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, pg_pool: asyncpg.Pool
) -> None:
    """A key older than DEPOT_IDEMPOTENCY_RETENTION is purged; reusing it then is a fresh request."""
    from depot_upload.documents.repository import PostgresDocuments

    key = f"key-{secrets.token_hex(8)}"
    headers = {**auth("alice"), "Idempotency-Key": key}
    assert (await upload(http, upload_api, headers, unique_text())).status_code == 201
    await pg_pool.execute(
        "UPDATE upload.idempotency_keys SET created_at = now() - interval '2 days' WHERE key = $1", key
    )
    assert await PostgresDocuments(pg_pool).purge_idempotency_keys(86400) >= 1
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.idempotency_keys WHERE key = $1", key) == 0
    assert (await upload(http, upload_api, headers, unique_text())).status_code == 201


async def test_readyz_is_503_naming_the_dependency_that_is_down(
    make_settings: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    """With the Kafka bootstrap unreachable, /readyz answers 503 with kafka false while /healthz stays 200."""
    from depot_devstack import servers
    from depot_upload.bootstrap import build_app
    from tests.conftest import serve

    settings = make_settings(UploadSettings, kafka_bootstrap=f"127.0.0.1:{servers.free_port()}")
    async with serve(build_app(settings)) as url:
        ready = await http.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"postgres": True, "s3": True, "kafka": False}}
        assert (await http.get(f"{url}/healthz")).status_code == 200


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/documents:batch"])
async def test_a_client_gone_mid_body_is_not_a_server_error_and_leaves_nothing_pending(
    upload_api: str, auth: Auth, pg_pool: asyncpg.Pool, path: str
) -> None:
    """A client that hangs up in the middle of its file (a timeout, a cancelled upload) gets no answer and
    causes no 500: the request is logged as 499 `http.client_disconnected`, and its pending row is discarded."""
    owner_id = owner()
    host, port = upload_api.removeprefix("http://").split(":")
    boundary = "gone" + secrets.token_hex(6)
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="gone.txt"\r\n\r\n'
    first_bytes = unique_text("half a file") * 50
    authorization = auth(owner_id)["Authorization"]
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {1 << 20}\r\n\r\n"
    ).encode() + head.replace('name="files"', 'name="file"' if path == "/v1/documents" else 'name="files"').encode()
    pending = "SELECT count(*) FROM upload.documents WHERE owner_id = $1 AND status = 'pending'"
    with structlog.testing.capture_logs() as logs:
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(request + first_bytes)
        await writer.drain()
        for _ in range(500):  # the upload has begun: its pending row exists
            if await pg_pool.fetchval(pending, owner_id) == 1:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the upload never began")
        writer.close()  # hang up mid-body
        await writer.wait_closed()
        for _ in range(500):
            if await pg_pool.fetchval(pending, owner_id) == 0 and any(
                e["event"] == "http.request" and e.get("status") == 499 for e in logs
            ):
                break
            await asyncio.sleep(0.02)
    events = [e["event"] for e in logs]
    assert "http.client_disconnected" in events
    assert "http.unhandled_error" not in events
    assert [e["status"] for e in logs if e["event"] == "http.request"] == [499]
    assert await pg_pool.fetchval(pending, owner_id) == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM upload.documents WHERE owner_id = $1", owner_id) == 0
