"""Stored bytes never change (docs/invariants.md, invariant 1), on every upload path.

The upload API of this module reaches S3 through a recording proxy, so the test holds every
request that went to S3 for an upload exactly as it went over the wire: Depot's own calls
and the client's PUTs to the presigned URLs Depot handed out. Once the upload is
acknowledged (201/200), each of them is sent again with different bytes of the same size:
S3 must refuse every one, and the document must still download with its recorded SHA-256.

moto (the local S3) does not check presigned signatures or ``x-amz-checksum-sha256``, so a
refusal seen here comes from the request's own conditions (``If-None-Match: *``, a
multipart upload id S3 has forgotten), not from a stale signature. What moto cannot check,
these tests check on the wire: the single-object PUT (obstore's) carries the SHA-256 of the
bytes it sends, and signs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from depot_common.errors import Conflict
from depot_common.s3 import ensure_bucket, object_store, s3_client
from depot_upload.bootstrap import build_app
from depot_upload.documents.storage import S3BlobStore
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.recording_proxy import RecordedRequest, RecordingProxy
from tests.upload_helpers import MIB, Auth


@pytest.fixture(scope="module")
async def proxy(s3_endpoint: str) -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy(s3_endpoint)
    async with serve(recorder) as url:
        recorder.base_url = url
        yield recorder


@pytest.fixture(scope="module")
def recorded_settings(make_settings: Callable[..., Any], proxy: RecordingProxy) -> UploadSettings:
    settings: UploadSettings = make_settings(
        UploadSettings, max_upload_bytes=12 * MIB, part_size=5 * MIB, s3_endpoint=proxy.base_url
    )
    return settings


@pytest.fixture(scope="module")
async def api(recorded_settings: UploadSettings) -> AsyncIterator[str]:
    """An upload API whose every S3 request (and every presigned URL) goes through the proxy."""
    async with serve(build_app(recorded_settings)) as url:
        yield url


@pytest.fixture(autouse=True)
def recording(proxy: RecordingProxy) -> RecordingProxy:
    proxy.requests.clear()
    return proxy


def kind(request: RecordedRequest) -> str:
    """The S3 operation of a recorded request, from its method and query."""
    query = request.url.partition("?")[2]
    if request.method == "POST":
        return "CreateMultipartUpload" if query.startswith("uploads") else "CompleteMultipartUpload"
    if request.method == "PUT":
        return "UploadPart" if "uploadId=" in query else "PutObject"
    return request.method


def writes(proxy: RecordingProxy, key: str) -> list[RecordedRequest]:
    """The recorded requests that could change ``key``; none may touch any other key."""
    changing = [request for request in proxy.requests if request.changes_state]
    assert all(f"/{key}" in request.url.partition("?")[0] for request in changing), changing
    return changing


async def replay_with_other_bytes(
    http: httpx.AsyncClient, s3: Any, bucket: str, key: str, requests: list[RecordedRequest]
) -> list[tuple[str, int]]:
    """Send each request again, exact URL and headers, a PUT's body replaced by other bytes of its size.

    Returns ``(operation, status)`` per request. Requests that carry no bytes may succeed
    without changing the object: a replayed ``CreateMultipartUpload`` starts a new, empty
    multipart upload (aborted here), a replayed ``CompleteMultipartUpload`` of a completed
    upload is acknowledged again (S3 treats it as a retry) or refused.
    """
    outcomes = []
    for request in requests:
        body = os.urandom(len(request.body)) if request.method == "PUT" else request.body
        response = await http.request(request.method, request.url, headers=request.header_map(), content=body)
        operation = kind(request)
        outcomes.append((operation, response.status_code))
        if operation == "CreateMultipartUpload" and response.status_code == 200:
            upload_id = response.text.split("<UploadId>")[1].split("</UploadId>")[0]
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    return outcomes


def carrying_bytes(outcomes: list[tuple[str, int]]) -> list[int]:
    """The statuses of the replayed requests that carried bytes (PutObject, UploadPart)."""
    statuses = [status for operation, status in outcomes if operation in ("PutObject", "UploadPart")]
    assert statuses, outcomes
    return statuses


async def head(s3: Any, bucket: str, key: str) -> tuple[Any, ...]:
    found = await s3.head_object(Bucket=bucket, Key=key)
    return found["ETag"], found["ContentLength"], found["ContentType"], found["LastModified"]


async def assert_unchanged(
    http: httpx.AsyncClient, api: str, headers: dict[str, str], document: dict[str, Any], data: bytes
) -> None:
    """The document still downloads as the acknowledged bytes, with the SHA-256 it recorded."""
    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    fetched = await http.get(f"{api}/v1/documents/{document['id']}", headers=headers)
    assert (fetched.json()["status"], fetched.json()["sha256"]) == ("stored", document["sha256"])
    content = await http.get(f"{api}/v1/documents/{document['id']}/content", headers=headers)
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == document["sha256"]


async def assert_upload_ids_forgotten(s3: Any, bucket: str, key: str, requests: list[RecordedRequest]) -> None:
    """S3 no longer knows the multipart upload ids these requests used (CompleteMultipartUpload ends them)."""
    upload_ids = {request.url.split("uploadId=")[1].split("&")[0] for request in requests if "uploadId=" in request.url}
    assert upload_ids
    for upload_id in upload_ids:
        with pytest.raises(ClientError) as raised:
            await s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        assert raised.value.response["Error"]["Code"] == "NoSuchUpload"


@pytest.mark.parametrize("size", [100 * 1024, 11 * MIB + 5], ids=["one PutObject", "multipart"])
async def test_streamed_upload_cannot_be_overwritten_by_its_own_requests(
    http: httpx.AsyncClient,
    api: str,
    auth: Auth,
    s3: Any,
    recording: RecordingProxy,
    recorded_settings: UploadSettings,
    size: int,
) -> None:
    """After a 201, each S3 request of POST /v1/documents, replayed with other bytes, is refused; bytes unchanged."""
    data = os.urandom(size)
    response = await http.post(f"{api}/v1/documents", headers=auth("alice"), files={"file": ("s.bin", data)})
    assert response.status_code == 201, response.text
    document = response.json()
    bucket, key = recorded_settings.s3_bucket, f"documents/{document['id']}"
    before = await head(s3, bucket, key)
    sent = writes(recording, key)
    expected = (
        ["PutObject"] if size < 5 * MIB else ["CreateMultipartUpload", *["UploadPart"] * 3, "CompleteMultipartUpload"]
    )
    assert [kind(request) for request in sent] == expected

    outcomes = await replay_with_other_bytes(http, s3, bucket, key, sent)
    assert all(status >= 400 for status in carrying_bytes(outcomes)), outcomes
    if size < 5 * MIB:
        assert outcomes == [("PutObject", 412)]  # If-None-Match: * — the object exists
    else:
        await assert_upload_ids_forgotten(s3, bucket, key, sent)
    assert await head(s3, bucket, key) == before
    await assert_unchanged(http, api, auth("alice"), document, data)


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [64 * 1024, 6 * MIB], ids=["64 KiB", "6 MiB, over obstore's 5 MiB chunk"])
async def test_single_object_put_is_one_conditional_put_with_its_sha256_and_never_overwrites(
    s3: Any, recording: RecordingProxy, recorded_settings: UploadSettings, size: int
) -> None:
    """A body under the part size (8 MiB here) is one PutObject with If-None-Match: * and the x-amz-checksum-sha256
    of its bytes, signed; never a multipart upload (obstore's own chunk size is 5 MiB). The same key again is
    Conflict object_exists and the stored bytes stay the first ones."""
    key, data = f"documents/{uuid.uuid4()}", os.urandom(size)
    async with s3_client(recorded_settings) as client:
        await ensure_bucket(client, recorded_settings.s3_bucket)
        recording.requests.clear()
        objects = object_store(recorded_settings)
        blobs = S3BlobStore(client, objects, bucket=recorded_settings.s3_bucket, part_size=8 * MIB)
        stored = await blobs.put_stream(key, chunks_of(data), max_bytes=12 * MIB, content_type="application/x-test")
        assert (stored.size_bytes, stored.sha256) == (size, hashlib.sha256(data).hexdigest())
        [put] = writes(recording, key)
        assert (kind(put), put.status, put.body == data) == ("PutObject", 200, True)
        headers = {name.lower(): value for name, value in put.headers}
        assert headers["if-none-match"] == "*"
        assert headers["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert "x-amz-checksum-sha256" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        assert headers["content-type"] == "application/x-test"
        with pytest.raises(Conflict) as refused:
            await blobs.put_stream(key, chunks_of(os.urandom(size)), max_bytes=12 * MIB, content_type="text/plain")
    assert refused.value.code == "object_exists"
    assert [(kind(r), r.status) for r in writes(recording, key)] == [("PutObject", 200), ("PutObject", 412)]
    stored_object = await s3.get_object(Bucket=recorded_settings.s3_bucket, Key=key)
    assert await stored_object["Body"].read() == data
    assert stored_object["ContentType"] == "application/x-test"


async def test_batch_upload_cannot_be_overwritten_by_its_own_requests(
    http: httpx.AsyncClient,
    api: str,
    auth: Auth,
    s3: Any,
    recording: RecordingProxy,
    recorded_settings: UploadSettings,
) -> None:
    """After a 207 batch, replaying each S3 request of each stored file with other bytes is refused; bytes unchanged."""
    small, large = os.urandom(3000), os.urandom(6 * MIB)
    response = await http.post(
        f"{api}/v1/documents:batch",
        headers=auth("alice"),
        files=[("files", ("a.bin", small)), ("files", ("b.bin", large))],
    )
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 201]
    bucket = recorded_settings.s3_bucket
    recorded = [request for request in recording.requests if request.changes_state]
    assert [kind(request) for request in recorded] == [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    for result, data in zip(results, (small, large), strict=True):
        document = result["document"]
        key = f"documents/{document['id']}"
        sent = [request for request in recorded if f"/{key}" in request.url.partition("?")[0]]
        assert sent
        before = await head(s3, bucket, key)
        outcomes = await replay_with_other_bytes(http, s3, bucket, key, sent)
        assert all(status >= 400 for status in carrying_bytes(outcomes)), outcomes
        assert await head(s3, bucket, key) == before
        await assert_unchanged(http, api, auth("alice"), document, data)


async def start_presigned(http: httpx.AsyncClient, api: str, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    body = {"filename": "p.bin", "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    started = await http.post(f"{api}/v1/uploads", headers=headers, json=body)
    assert started.status_code == 201, started.text
    upload: dict[str, Any] = started.json()
    return upload


async def issued_urls(http: httpx.AsyncClient, api: str, headers: dict[str, str], upload_id: str) -> list[Any]:
    """Every URL Depot hands out for an upload besides the create response: a second start and a resume."""
    resumed = await http.get(f"{api}/v1/uploads/{upload_id}", headers=headers)
    assert resumed.status_code == 200, resumed.text
    parts: list[Any] = resumed.json()["parts"]
    assert parts
    return parts


async def put_other_bytes(http: httpx.AsyncClient, part: dict[str, Any], size: int) -> int:
    """PUT other bytes of ``size`` to an issued URL with its headers; the status S3 answered."""
    response = await http.put(part["url"], content=os.urandom(size), headers=part["headers"])
    return response.status_code


async def test_presigned_single_part_url_cannot_replace_the_stored_object(
    http: httpx.AsyncClient,
    api: str,
    auth: Auth,
    s3: Any,
    recording: RecordingProxy,
    recorded_settings: UploadSettings,
) -> None:
    """After complete, the presigned PUT (exact URL and headers) is refused, with other bytes and with the same."""
    data = os.urandom(70_000)
    upload = await start_presigned(http, api, auth("alice"), data)
    (part,) = upload["parts"]
    resumed = await issued_urls(http, api, auth("alice"), upload["upload_id"])
    put = await http.put(part["url"], content=data, headers=part["headers"])
    assert put.status_code == 200, put.text
    completed = await http.post(f"{api}/v1/uploads/{upload['upload_id']}/complete", headers=auth("alice"))
    assert completed.status_code == 200, completed.text
    document = completed.json()
    bucket, key = recorded_settings.s3_bucket, f"documents/{document['id']}"
    before = await head(s3, bucket, key)
    sent = writes(recording, key)
    assert [kind(request) for request in sent] == ["PutObject"]

    # the overwrite of issue 8's Why: a second PUT of other bytes of the same size to the same URL
    assert await replay_with_other_bytes(http, s3, bucket, key, sent) == [("PutObject", 412)]
    again = await http.put(part["url"], content=data, headers={**part["headers"], "Content-Type": "text/html"})
    assert again.status_code == 412, "not even the same bytes may replace the object (metadata included)"
    assert [await put_other_bytes(http, url, len(data)) for url in resumed] == [412]  # the resume's URL too
    assert await head(s3, bucket, key) == before
    await assert_unchanged(http, api, auth("alice"), document, data)


async def test_presigned_multipart_urls_are_dead_after_complete(
    http: httpx.AsyncClient,
    api: str,
    auth: Auth,
    s3: Any,
    recording: RecordingProxy,
    recorded_settings: UploadSettings,
) -> None:
    """After complete is 200, every part URL and Depot's own multipart calls are refused (S3 forgot the upload id)."""
    data = os.urandom(11 * MIB)
    upload = await start_presigned(http, api, auth("alice"), data)
    resumed = await issued_urls(http, api, auth("alice"), upload["upload_id"])
    size = upload["part_size"]
    parts = []
    for part in upload["parts"]:
        number = part["part_number"]
        assert part["headers"] == {}
        put = await http.put(part["url"], content=data[(number - 1) * size : number * size], headers=part["headers"])
        assert put.status_code == 200, put.text
        parts.append({"part_number": number, "etag": put.headers["ETag"]})
    completed = await http.post(
        f"{api}/v1/uploads/{upload['upload_id']}/complete", headers=auth("alice"), json={"parts": parts}
    )
    assert completed.status_code == 200, completed.text
    document = completed.json()
    bucket, key = recorded_settings.s3_bucket, f"documents/{document['id']}"
    before = await head(s3, bucket, key)
    sent = writes(recording, key)
    assert [kind(request) for request in sent] == [
        "CreateMultipartUpload",
        *["UploadPart"] * 3,
        "CompleteMultipartUpload",
    ]

    outcomes = await replay_with_other_bytes(http, s3, bucket, key, sent)
    assert all(status >= 400 for status in carrying_bytes(outcomes)), outcomes
    await assert_upload_ids_forgotten(s3, bucket, key, sent)
    assert [part["part_number"] for part in resumed] == [1, 2, 3]  # the resume's fresh URLs die the same way
    assert all([await put_other_bytes(http, part, 5 * MIB) >= 400 for part in resumed])
    assert await head(s3, bucket, key) == before
    await assert_unchanged(http, api, auth("alice"), document, data)
    assert uuid.UUID(document["id"]) == uuid.UUID(upload["upload_id"])
