"""Property test: no malformed request makes the upload API answer 5xx."""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.processes import api_process

Auth = Callable[..., dict[str, str]]
EXPECTED = {200, 201, 400, 401, 404, 409, 413, 422}
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)
names = st.text(max_size=40) | st.sampled_from(["", ".", "..", "../x", "a/b", "a\\b", "x\x00y", "ok.txt", "é.pdf"])


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str], upload_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The upload API as a separate process (these tests are synchronous)."""
    with api_process(stack_env, tmp_path_factory.mktemp("fuzz") / "api.log", DEPOT_MAX_UPLOAD_BYTES="4096") as (_, url):
        yield url


def _part(name: str, filename: str, data: bytes, content_type: str) -> bytes:
    escaped = filename.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "surrogatepass")
    return (
        b'Content-Disposition: form-data; name="'
        + name.encode("utf-8", "surrogatepass")
        + b'"; filename="'
        + escaped
        + b'"\r\nContent-Type: '
        + content_type.encode()
        + b"\r\n\r\n"
        + data
    )


@FUZZ
@given(
    field=st.sampled_from(["file", "files", "other", ""]),
    filename=names,
    data=st.binary(max_size=6000),
    part_type=header_text,
    boundary=st.text(alphabet=string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70),
    mangle=st.sampled_from(["none", "truncate", "no-closing", "wrong-boundary", "garbage"]),
    idempotency_key=st.none() | header_text,
)
def test_malformed_uploads_never_cause_a_server_error(
    api: str,
    auth: Auth,
    field: str,
    filename: str,
    data: bytes,
    part_type: str,
    boundary: str,
    mangle: str,
    idempotency_key: str | None,
) -> None:
    """Random multipart bodies, boundaries, filenames, part types and keys get a 2xx/4xx answer, never a 5xx."""
    body = b"--" + boundary.encode() + b"\r\n" + _part(field, filename, data, part_type) + b"\r\n--"
    body += boundary.encode() + b"--\r\n"
    if mangle == "truncate":
        body = body[: len(body) // 2]
    elif mangle == "no-closing":
        body = body[: body.rfind(b"--" + boundary.encode())]
    elif mangle == "wrong-boundary":
        boundary = boundary + "x"
    elif mangle == "garbage":
        body = data
    headers = {**auth("fuzzer"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    for path in ("/v1/documents", "/v1/documents:batch"):
        response = httpx.post(api + path, content=body, headers=headers, timeout=30)
        assert response.status_code in EXPECTED | {207}, response.text
        assert "error" in response.json() or response.status_code in (201, 207)


@FUZZ
@given(
    path=st.text(max_size=60),
    limit=st.none() | header_text,
    cursor=st.none() | st.text(max_size=200),
    content_type=header_text,
    token=st.none() | header_text,
)
def test_malformed_reads_never_cause_a_server_error(
    api: str, auth: Auth, path: str, limit: str | None, cursor: str | None, content_type: str, token: str | None
) -> None:
    """Random ids, query strings, content types and tokens on every route get a 2xx/4xx answer, never a 5xx."""
    headers = {"Authorization": f"Bearer {token}".strip()} if token is not None else auth("fuzzer")
    params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
    doc = f"{api}/v1/documents/{quote(path, safe='') or 'x'}"
    for method, url in (
        ("GET", api + "/v1/documents"),
        ("GET", doc),
        ("GET", doc + "/content"),
        ("DELETE", doc),
        ("POST", api + "/v1/documents"),
        ("GET", api + "/v1/status"),
    ):
        response = httpx.request(method, url, params=params, headers={**headers, "Content-Type": content_type})
        assert response.status_code < 500, (method, url, response.text)
