"""Downloads verify the bytes (docs/api.md, ``GET /v1/documents/{id}/content``) against real S3.

Depot re-hashes while it streams and holds the last chunk back until the whole object
matched the recorded SHA-256: bytes changed behind Depot's back (here: written straight
into S3) reach the client as a broken transfer, never as a clean end, and are logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import httpx
import pytest
import structlog.testing

from depot_upload.settings import UploadSettings
from tests.upload_helpers import MIB, Auth


async def upload(http: httpx.AsyncClient, api: str, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    response = await http.post(f"{api}/v1/documents", headers=headers, files={"file": ("v.bin", data)})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("size", [1, 3000, 2 * MIB + 17])
async def test_untampered_download_has_the_repr_digest_and_the_recorded_bytes(
    http: httpx.AsyncClient, upload_api: str, auth: Auth, size: int
) -> None:
    """A stored document downloads whole, with Repr-Digest sha-256=:<base64>: (RFC 9530) of its recorded SHA-256."""
    data = os.urandom(size)
    document = await upload(http, upload_api, auth("alice"), data)
    response = await http.get(f"{upload_api}/v1/documents/{document['id']}/content", headers=auth("alice"))
    assert response.status_code == 200
    digest = hashlib.sha256(data).digest()
    assert response.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert response.headers["ETag"] == f'"{digest.hex()}"'
    assert response.headers["Content-Length"] == str(size)
    assert response.content == data


@pytest.mark.parametrize(
    ("size", "tampered_size"),
    [(3000, 3000), (2 * MIB + 17, 2 * MIB + 17), (2 * MIB, 2 * MIB + 1)],
    ids=["small, same size", "several chunks, same size", "one byte longer"],
)
async def test_bytes_replaced_behind_depots_back_break_the_download_and_are_logged(
    http: httpx.AsyncClient,
    upload_api: str,
    auth: Auth,
    s3: Any,
    upload_settings: UploadSettings,
    size: int,
    tampered_size: int,
) -> None:
    """An object replaced straight in S3 reaches the client as a broken body, logged as download.content_mismatch."""
    data = os.urandom(size)
    document = await upload(http, upload_api, auth("alice"), data)
    key = f"documents/{document['id']}"
    await s3.put_object(Bucket=upload_settings.s3_bucket, Key=key, Body=os.urandom(tampered_size))

    received = bytearray()

    async def read_all(response: httpx.Response) -> None:
        async for chunk in response.aiter_raw():
            received.extend(chunk)

    with structlog.testing.capture_logs() as logs:  # the API runs in this process
        async with http.stream(
            "GET", f"{upload_api}/v1/documents/{document['id']}/content", headers=auth("alice")
        ) as response:
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(size)
            with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|without sending complete"):
                await read_all(response)
    assert len(received) < size  # the held-back chunk was never sent

    mismatch = [entry for entry in logs if entry["event"] == "download.content_mismatch"]
    assert len(mismatch) == 1, logs
    assert mismatch[0]["log_level"] == "error"
    assert mismatch[0]["document_id"] == document["id"]
    assert mismatch[0]["expected_sha256"] == document["sha256"]
    assert mismatch[0]["actual_size"] == tampered_size
    # leave the session's bucket consistent for other tests: the tampered document goes
    deleted = await http.delete(f"{upload_api}/v1/documents/{document['id']}", headers=auth("alice"))
    assert deleted.status_code == 204


async def test_openapi_documents_the_repr_digest_of_the_content(http: httpx.AsyncClient, upload_api: str) -> None:
    """GET /v1/documents/{id}/content lists Repr-Digest among its 200 response headers, and 307, 401, 404, 503."""
    spec = (await http.get(f"{upload_api}/openapi.json")).json()
    responses = spec["paths"]["/v1/documents/{document_id}/content"]["get"]["responses"]
    assert {"200", "307", "401", "404", "503"} <= set(responses)
    assert "Repr-Digest" in responses["200"]["headers"]
