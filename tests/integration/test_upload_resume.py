"""Resuming a presigned upload (docs/api.md, ``GET /v1/uploads/{upload_id}``) against real PostgreSQL and S3.

The upload API of this module allows 32 MiB with 5 MiB parts (a 4-part upload fits) and
reaches S3 through a recording proxy, so a test can count the part PUTs S3 received.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.recording_proxy import RecordingProxy
from tests.upload_helpers import MIB, Auth


@pytest.fixture(scope="module")
async def proxy(s3_endpoint: str) -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy(s3_endpoint)
    async with serve(recorder) as url:
        recorder.base_url = url
        yield recorder


@pytest.fixture(scope="module")
async def api(make_settings: Callable[..., Any], proxy: RecordingProxy) -> AsyncIterator[str]:
    settings = make_settings(UploadSettings, max_upload_bytes=32 * MIB, part_size=5 * MIB, s3_endpoint=proxy.base_url)
    async with serve(build_app(settings)) as url:
        yield url


@pytest.fixture(autouse=True)
async def abort_leftover_uploads(api: str, auth: Auth, pg_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """After each test, abort the uploads it left pending, so no multipart upload outlives it."""
    yield
    rows = await pg_pool.fetch("SELECT document_id, owner_id FROM upload.upload_sessions WHERE status = 'pending'")
    async with httpx.AsyncClient(timeout=30) as http:
        for row in rows:
            response = await http.delete(f"{api}/v1/uploads/{row['document_id']}", headers=auth(row["owner_id"]))
            assert response.status_code in (204, 409), response.text


async def start(http: httpx.AsyncClient, api: str, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    body = {"filename": "r.bin", "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    response = await http.post(f"{api}/v1/uploads", headers=headers, json=body)
    assert response.status_code == 201, response.text
    upload: dict[str, Any] = response.json()
    return upload


async def put(http: httpx.AsyncClient, upload: dict[str, Any], part: dict[str, Any], data: bytes) -> str:
    """PUT one part's bytes with its signed headers; the ETag S3 answered."""
    size, number = upload["part_size"], part["part_number"]
    response = await http.put(part["url"], content=data[(number - 1) * size : number * size], headers=part["headers"])
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


def part_puts(proxy: RecordingProxy, upload_id: str) -> list[int]:
    """The part numbers of every UploadPart S3 received for this upload, in order."""
    return [
        int(request.url.split("partNumber=")[1].split("&")[0])
        for request in proxy.requests
        if request.method == "PUT" and f"/documents/{upload_id}?" in request.url and request.status == 200
    ]


async def test_interrupted_four_part_upload_is_resumed_by_another_client_sending_only_the_missing_parts(
    api: str, auth: Auth, proxy: RecordingProxy
) -> None:
    """A 4-part upload stopped after 2 parts is finished by a second client from GET: it sends parts 3 and 4 only."""
    data = os.urandom(15 * MIB + 4321)
    async with httpx.AsyncClient(timeout=60) as first:
        upload = await start(first, api, auth("alice"), data)
        assert [part["part_number"] for part in upload["parts"]] == [1, 2, 3, 4]
        etags = {part["part_number"]: await put(first, upload, part, data) for part in upload["parts"][:2]}
    upload_id = upload["upload_id"]

    async with httpx.AsyncClient(timeout=60) as second:
        response = await second.get(f"{api}/v1/uploads/{upload_id}", headers=auth("alice"))
        assert response.status_code == 200, response.text
        state = response.json()
        assert set(state) == {"upload_id", "status", "expires_at", "part_size", "parts_received", "parts"}
        assert (state["upload_id"], state["status"], state["part_size"]) == (upload_id, "pending", 5 * MIB)
        assert state["expires_at"] == upload["expires_at"]
        assert state["parts_received"] == [
            {"part_number": 1, "etag": etags[1], "size": 5 * MIB},
            {"part_number": 2, "etag": etags[2], "size": 5 * MIB},
        ]
        assert [part["part_number"] for part in state["parts"]] == [3, 4]
        assert all(part["headers"] == {} for part in state["parts"])
        for part in state["parts"]:
            etags[part["part_number"]] = await put(second, state, part, data)
        parts = [{"part_number": number, "etag": etag} for number, etag in sorted(etags.items())]
        completed = await second.post(
            f"{api}/v1/uploads/{upload_id}/complete", headers=auth("alice"), json={"parts": parts}
        )
        assert completed.status_code == 200, completed.text
        assert (completed.json()["status"], completed.json()["sha256"]) == ("stored", hashlib.sha256(data).hexdigest())
        content = await second.get(f"{api}/v1/documents/{upload_id}/content", headers=auth("alice"))
        assert content.content == data

        assert part_puts(proxy, upload_id) == [1, 2, 3, 4]  # each part crossed the network once
        after = await second.get(f"{api}/v1/uploads/{upload_id}", headers=auth("alice"))
        assert after.status_code == 200
        assert (after.json()["status"], after.json()["parts"], after.json()["parts_received"]) == ("completed", [], [])


async def test_single_part_upload_reports_whether_s3_holds_the_object(api: str, auth: Auth) -> None:
    """A single-part upload lists a fresh signed PUT until the bytes are in S3, then the object as part 1 and no URL."""
    data = os.urandom(3000)
    async with httpx.AsyncClient(timeout=30) as http:
        upload = await start(http, api, auth("alice"), data)
        before = (await http.get(f"{api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))).json()
        assert before["parts_received"] == []
        (part,) = before["parts"]
        assert part["part_number"] == 1
        assert part["headers"] == upload["parts"][0]["headers"]
        etag = await put(http, before, part, data)
        after = (await http.get(f"{api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))).json()
        assert (after["parts_received"], after["parts"]) == ([{"part_number": 1, "etag": etag, "size": 3000}], [])


async def test_another_owners_upload_is_404(api: str, auth: Auth) -> None:
    """Bob cannot see Alice's upload (404, as for an unknown or malformed id); without a token it is 401."""
    data = os.urandom(6 * MIB)
    async with httpx.AsyncClient(timeout=30) as http:
        upload = await start(http, api, auth("alice"), data)
        for upload_id in (upload["upload_id"], str(uuid.uuid4()), "not-a-uuid"):
            response = await http.get(f"{api}/v1/uploads/{upload_id}", headers=auth("bob"))
            assert (response.status_code, response.json()["error"]) == (404, "not_found")
        assert (await http.get(f"{api}/v1/uploads/{upload['upload_id']}")).status_code == 401
        assert (await http.get(f"{api}/v1/uploads/{upload['upload_id']}", headers=auth("alice"))).status_code == 200


async def test_expired_upload_is_410_and_aborted_upload_is_410(api: str, auth: Auth, pg_pool: asyncpg.Pool) -> None:
    """An upload past expires_at is 410 upload_expired and an aborted one 410 upload_aborted: no URL is handed out."""
    async with httpx.AsyncClient(timeout=30) as http:
        expired = await start(http, api, auth("alice"), os.urandom(6 * MIB))
        await pg_pool.execute(
            "UPDATE upload.upload_sessions SET expires_at = now() - interval '1 second' WHERE document_id = $1",
            uuid.UUID(expired["upload_id"]),
        )
        response = await http.get(f"{api}/v1/uploads/{expired['upload_id']}", headers=auth("alice"))
        assert (response.status_code, response.json()["error"]) == (410, "upload_expired")

        aborted = await start(http, api, auth("alice"), os.urandom(100))
        assert (await http.delete(f"{api}/v1/uploads/{aborted['upload_id']}", headers=auth("alice"))).status_code == 204
        response = await http.get(f"{api}/v1/uploads/{aborted['upload_id']}", headers=auth("alice"))
        assert (response.status_code, response.json()["error"]) == (410, "upload_aborted")


async def test_openapi_lists_every_status_of_the_resume_endpoint(api: str) -> None:
    """GET /v1/uploads/{upload_id} documents 200 (the upload's state), 401, 404, 410 and 503."""
    async with httpx.AsyncClient(timeout=30) as http:
        spec = (await http.get(f"{api}/openapi.json")).json()
    operation = spec["paths"]["/v1/uploads/{upload_id}"]["get"]
    assert {"200", "401", "404", "410", "503"} <= set(operation["responses"])
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = spec["components"]["schemas"][schema]["properties"]
    assert set(fields) == {"upload_id", "status", "expires_at", "part_size", "parts_received", "parts"}
