"""Property tests: no request, however hostile, makes the upload API answer 5xx, at any depth.

Tokens are valid-but-hostile JWTs (signed with the session's secret, so the claim checks are
reached: wrong types, empty or huge ``sub``, missing ``exp``, ``roles`` of the wrong type),
malformed bearer strings, or a well-formed token of the fuzzer. Ids are real ids of another
owner's document and upload, random UUIDs and junk. Bodies have many parts. Every endpoint
of the upload API is hit, ``/v1/uploads*`` included. A 5xx anywhere fails: the response
status, and any ``status`` or ``internal_error`` nested in the JSON (a 207's items).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.processes import api_process

Auth = Callable[..., dict[str, str]]
# Bounded in time: a fixed number of examples, and no shrinking (a failure is reported as found, at once).
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=[Phase.explicit, Phase.generate],
)
VICTIM = "victim"

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)
names = st.text(max_size=40) | st.sampled_from(["", ".", "..", "../x", "a/b", "a\\b", "x\x00y", "ok.txt", "é.pdf"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
# Claims of every wrong shape; "sub" never names the victim (the fuzzer must not own its documents).
subs = (
    st.text(max_size=40).filter(lambda sub: sub != VICTIM)
    | st.sampled_from(["", " ", "fuzzer", "x" * 3000, "é" * 2000, "\x00"])
    | st.integers()
    | st.lists(st.text(max_size=5), max_size=3)
    | st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)
expiries = (
    st.integers(min_value=int(time.time()) + 60, max_value=2**40)
    | st.integers(max_value=int(time.time()) - 60)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | st.lists(st.integers(), max_size=2)
)
roles = (
    st.lists(st.text(max_size=10) | st.integers() | st.none(), max_size=4)
    | st.sampled_from(["admin", ["admin"], {"admin": True}, [["admin"]], None, 7])
    | json_values
)


@pytest.fixture(scope="module")
def api(stack_env: dict[str, str], upload_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The upload API as a separate process (these tests are synchronous)."""
    with api_process(stack_env, tmp_path_factory.mktemp("fuzz") / "api.log", DEPOT_MAX_UPLOAD_BYTES="4096") as (_, url):
        yield url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One HTTP client for the module (a client per request would spend the time budget on TLS set-up)."""
    with httpx.Client(timeout=30) as shared:
        yield shared


@pytest.fixture(scope="module")
def victim(api: str, auth: Auth, client: httpx.Client) -> Iterator[dict[str, str]]:
    """Another owner's stored document and pending upload; after the module, both must be as they were."""
    data = f"the victim's bytes {uuid.uuid4()}\n".encode()
    stored = client.post(f"{api}/v1/documents", headers=auth(VICTIM), files={"file": ("v.txt", data, "text/plain")})
    assert stored.status_code == 201, stored.text
    declared = {"filename": "v.bin", "size_bytes": 1000, "sha256": hashlib.sha256(b"v" * 1000).hexdigest()}
    pending = client.post(f"{api}/v1/uploads", headers=auth(VICTIM), json=declared)
    assert pending.status_code == 201, pending.text
    ids = {"document": stored.json()["id"], "upload": pending.json()["upload_id"]}
    yield ids
    content = client.get(f"{api}/v1/documents/{ids['document']}/content", headers=auth(VICTIM))
    assert (content.status_code, content.content) == (200, data), "the victim's document is untouched"
    upload = client.get(f"{api}/v1/documents/{ids['upload']}", headers=auth(VICTIM))
    assert (upload.status_code, upload.json()["status"]) == (200, "pending"), "the victim's upload is untouched"
    assert client.delete(f"{api}/v1/uploads/{ids['upload']}", headers=auth(VICTIM)).status_code == 204


def hostile_token(secret: str) -> st.SearchStrategy[str]:
    """A JWT signed with the real secret whose claims are missing, mistyped, empty or huge."""
    claims = st.fixed_dictionaries(
        {},
        optional={
            "sub": subs,
            "exp": expiries,
            "roles": roles,
            "iat": expiries,
            "nbf": expiries,
            "aud": json_values,
            "iss": json_values,
        },
    )
    return claims.map(lambda payload: sign(payload, secret))


def sign(payload: dict[str, Any], secret: str) -> str:
    """An HS256 JWT of ``payload`` exactly as given (a JWT library would refuse to encode some of these claims)."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def tokens(secret: str, auth: Auth) -> st.SearchStrategy[dict[str, str]]:
    """``Authorization`` headers: the fuzzer's good token, a hostile JWT, junk, or none."""
    fuzzer = auth("fuzzer")
    return st.one_of(
        st.just(fuzzer),
        hostile_token(secret).map(lambda token: {"Authorization": f"Bearer {token}"}),
        header_text.map(lambda junk: {"Authorization": f"Bearer {junk}".strip()}),
        st.just({}),
    )


def assert_no_server_error(response: httpx.Response, context: Any) -> None:
    """No 5xx: not the response, not any ``status`` or ``internal_error`` nested in its JSON."""
    assert response.status_code < 500, (context, response.status_code, response.text[:500])
    try:
        body = response.json()
    except ValueError:
        return

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            status = node.get("status")
            assert not (isinstance(status, int) and status >= 500), (context, node)
            assert node.get("error") != "internal_error", (context, node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(body)


def _part(name: str, filename: str | None, data: bytes, content_type: str) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name.encode("utf-8", "surrogatepass") + b'"'
    if filename is not None:
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "surrogatepass")
        disposition += b'; filename="' + escaped + b'"'
    return disposition + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + data


parts = st.lists(
    st.tuples(
        st.sampled_from(["file", "files", "other", ""]),
        st.none() | names,
        st.binary(max_size=3000) | st.sampled_from([b"", b"same bytes\n", b"x" * 5000]),
        header_text,
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(
    data=st.data(),
    body_parts=parts,
    boundary=st.text(alphabet=string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70),
    mangle=st.sampled_from(["none", "none", "truncate", "no-closing", "wrong-boundary", "garbage"]),
    idempotency_key=st.none() | header_text,
)
def test_hostile_uploads_never_cause_a_server_error(
    client: httpx.Client,
    api: str,
    auth: Auth,
    stack_env: dict[str, str],
    data: st.DataObject,
    body_parts: list[tuple[str, str | None, bytes, str]],
    boundary: str,
    mangle: str,
    idempotency_key: str | None,
) -> None:
    """Many-part bodies, broken boundaries, hostile filenames, keys and tokens on both upload routes: never a 5xx,
    not even in one item of a 207."""
    send_hostile_upload(client, api, auth, stack_env, data, body_parts, boundary, mangle, idempotency_key)


def send_hostile_upload(
    client: httpx.Client,
    api: str,
    auth: Auth,
    stack_env: dict[str, str],
    data: st.DataObject,
    body_parts: list[tuple[str, str | None, bytes, str]],
    boundary: str,
    mangle: str,
    idempotency_key: str | None,
) -> None:
    headers = data.draw(tokens(stack_env["DEPOT_JWT_SECRET"], auth), label="token")
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + _part(*part) + b"\r\n" for part in body_parts) + delimiter + b"--\r\n"
    if mangle == "truncate":
        body = body[: len(body) // 2]
    elif mangle == "no-closing":
        body = body[: body.rfind(delimiter)]
    elif mangle == "wrong-boundary":
        boundary = boundary + "x"
    elif mangle == "garbage":
        body = body_parts[0][2]
    headers = {**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    for path in ("/v1/documents", "/v1/documents:batch"):
        response = client.post(api + path, content=body, headers=headers, timeout=30)
        assert_no_server_error(response, path)
        if response.status_code not in (201, 207):
            assert "error" in response.json()


@FUZZ
@given(
    data=st.data(),
    target=st.sampled_from(["document", "upload", "random", "junk"]),
    junk=st.text(max_size=60),
    limit=st.none() | header_text,
    cursor=st.none() | st.text(max_size=200),
    redirect=st.none() | header_text,
    content_type=header_text,
    body=json_values,
    declaration=st.fixed_dictionaries(
        {},
        optional={
            "filename": names | json_values,
            "size_bytes": st.integers() | json_values,
            "sha256": st.sampled_from([hashlib.sha256(b"").hexdigest(), "0" * 64, "A" * 64]) | json_values,
            "content_type": header_text | json_values,
            "parts": st.lists(
                st.fixed_dictionaries({"part_number": st.integers() | json_values, "etag": header_text | json_values}),
                max_size=4,
            )
            | json_values,
        },
    ),
)
def test_hostile_requests_on_every_route_never_cause_a_server_error(
    client: httpx.Client,
    api: str,
    auth: Auth,
    stack_env: dict[str, str],
    victim: dict[str, str],
    data: st.DataObject,
    target: str,
    junk: str,
    limit: str | None,
    cursor: str | None,
    redirect: str | None,
    content_type: str,
    body: Any,
    declaration: dict[str, Any],
) -> None:
    """Every route of documents and uploads, with another owner's real ids, random ids, junk, hostile queries,
    JSON bodies and tokens: never a 5xx, and the other owner's document and upload stay out of reach (404)."""
    send_hostile_requests(
        client,
        api,
        auth,
        stack_env,
        victim,
        data,
        target,
        junk,
        limit,
        cursor,
        redirect,
        content_type,
        body,
        declaration,
    )


def send_hostile_requests(
    client: httpx.Client,
    api: str,
    auth: Auth,
    stack_env: dict[str, str],
    victim: dict[str, str],
    data: st.DataObject,
    target: str,
    junk: str,
    limit: str | None,
    cursor: str | None,
    redirect: str | None,
    content_type: str,
    body: Any,
    declaration: dict[str, Any],
) -> None:
    headers = data.draw(tokens(stack_env["DEPOT_JWT_SECRET"], auth), label="token")
    ident = {"document": victim["document"], "upload": victim["upload"], "random": str(uuid.uuid4())}.get(target)
    path = ident or quote(junk, safe="") or "x"
    params = {k: v for k, v in {"limit": limit, "cursor": cursor, "redirect": redirect}.items() if v is not None}
    json_body = data.draw(st.sampled_from([body, declaration]), label="json")
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/v1/documents", None),
        ("GET", f"/v1/documents/{path}", None),
        ("GET", f"/v1/documents/{path}/content", None),
        ("DELETE", f"/v1/documents/{path}", None),
        ("POST", "/v1/documents", json_body),
        ("POST", "/v1/documents:batch", json_body),
        ("GET", "/v1/status", None),
        ("POST", "/v1/uploads", json_body),
        ("GET", f"/v1/uploads/{path}", None),
        ("POST", f"/v1/uploads/{path}/complete", json_body),
        ("DELETE", f"/v1/uploads/{path}", None),
    ]
    for method, route, payload in routes:
        response = client.request(
            method,
            api + route,
            params=params,
            json=payload,
            headers={**headers, "Content-Type": content_type} if payload is None else headers,
            timeout=30,
        )
        assert_no_server_error(response, (method, route))
        if ident is not None and target != "random" and ident in route:  # never found, never a hint it exists
            assert response.status_code in (400, 401, 404, 422), (method, route, response.status_code, response.text)
