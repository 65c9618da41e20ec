"""The bench's tus peer (benchmarks/peers/tus.py): install checks and the tus 1.0 client's verdicts."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from benchmarks.peers import tus

FILES = "http://tus.test/files"


def _response(status: int, headers: dict[str, str], method: str = "POST", url: str = FILES) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request(method, url))


def test_every_npm_package_is_pinned_to_an_exact_version() -> None:
    manifest = tus.package_json()
    assert manifest["dependencies"] == tus.PACKAGES
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in tus.PACKAGES.values())


def test_each_set_of_versions_installs_into_its_own_scratch_directory(tmp_path: Path) -> None:
    name = tus.install_dir(tmp_path).name
    assert tus.install_dir(tmp_path).parent == tmp_path
    assert all(version in name for version in tus.PACKAGES.values())


def _manifests(directory: Path, versions: dict[str, str]) -> None:
    for name, version in versions.items():
        path = directory / "node_modules" / name / "package.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"name": name, "version": version}))


def test_an_install_is_reused_only_when_every_pinned_version_is_there(tmp_path: Path) -> None:
    complete, stale, partial = tmp_path / "complete", tmp_path / "stale", tmp_path / "partial"
    _manifests(complete, tus.PACKAGES)
    _manifests(stale, {**tus.PACKAGES, "@tus/server": "1.0.0"})
    _manifests(partial, dict(list(tus.PACKAGES.items())[:1]))
    assert tus.installed(complete)
    assert not tus.installed(stale)
    assert not tus.installed(partial)
    assert not tus.installed(tmp_path / "missing")


def test_node_versions_are_parsed_from_node_dash_dash_version() -> None:
    assert tus.parse_node_version("v20.20.2\n") == (20, 20, 2)
    assert tus.parse_node_version("v22.1.0-nightly") == (22, 1, 0)
    with pytest.raises(ValueError, match=r"not a Node\.js version"):
        tus.parse_node_version("command not found")


def test_without_node_or_npm_the_peer_is_unavailable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(tus.PeerUnavailable, match="node not found on PATH"):
        tus.node_binary()
    with pytest.raises(tus.PeerUnavailable, match="npm not found on PATH"):
        tus.install(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_the_server_gets_the_bench_s3_target_and_none_of_the_inherited_credentials() -> None:
    target = tus.S3Target(endpoint="http://127.0.0.1:9", bucket="bench", access_key="key", secret_key="secret")
    env = tus.server_env(target, 4321, {"PATH": "/bin", "AWS_PROFILE": "prod", "DEPOT_S3_BUCKET": "x"})
    assert env["PATH"] == "/bin"
    assert "AWS_PROFILE" not in env
    assert "DEPOT_S3_BUCKET" not in env
    assert env["TUS_PORT"] == "4321"
    assert env["TUS_S3_ENDPOINT"] == "http://127.0.0.1:9"
    assert env["TUS_S3_BUCKET"] == "bench"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("key", "secret")
    assert int(env["TUS_PART_SIZE"]) >= 5 * 1024 * 1024  # S3's minimum part size


def test_options_must_speak_tus_1_0_0_and_lists_its_extensions() -> None:
    answer = _response(204, {"Tus-Version": "1.0.0", "Tus-Extension": "creation, creation-with-upload"}, "OPTIONS")
    assert tus.extensions(answer) == {"creation", "creation-with-upload"}
    with pytest.raises(tus.TusError, match=r"lacks 1\.0\.0"):
        tus.extensions(_response(204, {"Tus-Version": "0.2.2"}, "OPTIONS"))
    with pytest.raises(tus.TusError, match="answered 404"):
        tus.extensions(_response(404, {}, "OPTIONS"))


def test_a_creation_answer_gives_the_absolute_upload_url_and_offset() -> None:
    assert tus.created(_response(201, {"Location": "/files/abc", "Upload-Offset": "10"})) == (
        "http://tus.test/files/abc",
        10,
    )
    assert tus.created(_response(201, {"Location": "http://other/files/abc"})) == ("http://other/files/abc", 0)
    with pytest.raises(tus.TusError, match="without Location"):
        tus.created(_response(201, {"Upload-Offset": "0"}))
    with pytest.raises(tus.TusError, match="answered 500"):
        tus.created(_response(500, {"Location": "/files/abc"}))
    with pytest.raises(tus.TusError, match="is not an offset"):
        tus.created(_response(201, {"Location": "/files/abc", "Upload-Offset": "-1"}))


def test_a_patch_must_move_the_offset_forward_within_the_size() -> None:
    assert tus.patched(_response(204, {"Upload-Offset": "100"}, "PATCH"), 40, 100) == 100
    for offset in ("40", "101"):
        with pytest.raises(tus.TusError, match="left Upload-Offset"):
            tus.patched(_response(204, {"Upload-Offset": offset}, "PATCH"), 40, 100)
    with pytest.raises(tus.TusError, match="answered 409"):
        tus.patched(_response(409, {"Upload-Offset": "40"}, "PATCH"), 40, 100)


class FakeTusServer:
    """A tus server in memory that keeps at most ``takes`` bytes of each request."""

    def __init__(self, *, takes: int) -> None:
        self.takes = takes
        self.stored: dict[str, bytearray] = {}
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.method)
        assert request.headers["Tus-Resumable"] == "1.0.0"
        body = request.content
        if body:
            assert request.headers["Content-Type"] == "application/offset+octet-stream"
        if request.method == "POST":
            name = f"u{len(self.stored)}"
            self.stored[name] = bytearray(body[: self.takes])
            headers = {"Location": f"/files/{name}", "Upload-Offset": str(len(self.stored[name]))}
            return httpx.Response(201, headers=headers)
        name = request.url.path.rsplit("/", 1)[-1]
        assert int(request.headers["Upload-Offset"]) == len(self.stored[name])
        self.stored[name] += body[: self.takes]
        return httpx.Response(204, headers={"Upload-Offset": str(len(self.stored[name]))})


async def _upload(server: FakeTusServer, data: bytes, *, with_upload: bool) -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
        return await tus.upload(http, FILES, data, with_upload=with_upload)


async def test_creation_with_upload_sends_the_body_in_the_post() -> None:
    server = FakeTusServer(takes=1 << 20)
    location = await _upload(server, b"x" * 1000, with_upload=True)
    assert server.requests == ["POST"]
    assert location == "http://tus.test/files/u0"
    assert bytes(server.stored["u0"]) == b"x" * 1000


async def test_what_the_post_did_not_take_is_patched_from_the_offset_the_server_holds() -> None:
    server = FakeTusServer(takes=300)
    data = bytes(range(256)) * 4
    await _upload(server, data, with_upload=True)
    assert server.requests == ["POST", "PATCH", "PATCH", "PATCH"]
    assert bytes(server.stored["u0"]) == data


async def test_without_creation_with_upload_the_body_goes_in_a_patch() -> None:
    server = FakeTusServer(takes=1 << 20)
    await _upload(server, b"y" * 500, with_upload=False)
    assert server.requests == ["POST", "PATCH"]
    assert bytes(server.stored["u0"]) == b"y" * 500


async def test_a_server_that_stops_taking_bytes_raises_instead_of_looping() -> None:
    with pytest.raises(tus.TusError, match="from 0 of 100 left Upload-Offset at 0"):
        await _upload(FakeTusServer(takes=0), b"z" * 100, with_upload=True)


def test_an_upload_whose_final_offset_is_not_its_size_is_not_complete() -> None:
    tus.completed(100, 100, FILES)
    with pytest.raises(tus.TusError, match="ended at Upload-Offset 99, not its size 100"):
        tus.completed(99, 100, FILES)


async def test_a_failed_creation_raises_instead_of_counting() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500, text="boom"))) as http:
        with pytest.raises(tus.TusError, match="answered 500: boom"):
            await tus.upload(http, FILES, b"data", with_upload=True)


def test_s3_requests_are_reported_per_upload_and_per_command() -> None:
    count = tus.RequestCount(uploads=4, requests=Counter({"PutObjectCommand": 4, "GetObjectCommand": 8}))
    assert count.per_upload == 3.0
    assert count.by_command() == {"GetObject": 2.0, "PutObject": 1.0}


def test_the_s3_servers_access_log_gives_an_independent_count() -> None:
    log = "\n".join(
        [
            " * Running on http://127.0.0.1:5000",
            '127.0.0.1 - - [01/Dec/2026 21:26:18] "POST /bench/abc?uploads HTTP/1.1" 200 -',
            '127.0.0.1 - - [01/Dec/2026 21:26:18] "\x1b[33mGET /bench/abc.part HTTP/1.1\x1b[0m" 404 -',
            '127.0.0.1 - - [01/Dec/2026 21:26:18] "PUT /bench/abc.info HTTP/1.1" 200 -',
            "Traceback (most recent call last):",
        ]
    )
    assert tus.access_log_requests(log) == 3
    count = tus.RequestCount(uploads=2, requests=Counter({"PutObjectCommand": 6}), logged=5)
    assert count.logged_per_upload == 2.5
    assert tus.RequestCount(uploads=2, requests=Counter()).logged_per_upload is None


def test_the_server_script_is_placed_beside_the_packages_under_a_name_of_its_content(tmp_path: Path) -> None:
    script = tus.place_script(tmp_path)
    assert script.parent == tmp_path
    assert script.read_bytes() == tus.SCRIPT.read_bytes()
    assert tus.place_script(tmp_path) == script
    assert [path.name for path in tmp_path.iterdir()] == [script.name]
