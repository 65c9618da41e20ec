"""`make dev` as a newcomer uses it: start, source .devstack/env, mint a token, upload, search, Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from depot_devstack import servers

pytestmark = pytest.mark.e2e

REQUIRED = {
    "DEPOT_API_URL",
    "DEPOT_SEARCH_URL",
    "DEPOT_RECONCILER_URL",
    "DEPOT_DATABASE_URL",
    "DEPOT_KAFKA_BOOTSTRAP",
    "DEPOT_S3_ENDPOINT",
    "DEPOT_S3_BUCKET",
    "DEPOT_JWT_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def devstack(postgres_admin_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m depot_devstack` on free ports with its own database; killed if the test leaves it running."""
    name = f"depot_e2e_{secrets.token_hex(4)}"
    database = servers.recreate_database(postgres_admin_url, name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")},
        "DEPOT_DATABASE_URL": database,
        "DEPOT_API_PORT": str(servers.free_port()),
        "DEPOT_SEARCH_PORT": str(servers.free_port()),
        "DEPOT_RECONCILER_PORT": str(servers.free_port()),
        "DEPOT_MAX_UPLOAD_BYTES": "1048576",
        "DEPOT_CONSUMER_SESSION_TIMEOUT": "2",
    }
    state = tmp_path / "devstack"
    with (tmp_path / "devstack.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "depot_devstack", "--state-dir", str(state), "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield process, state
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        servers.drop_database(postgres_admin_url, name)


def test_make_dev_serves_upload_to_search_and_stops_cleanly(
    devstack: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    """The stack comes up, writes .devstack/env, a token from `depot token` uploads a file that is searchable
    within 5 s and invisible to bob, DEPOT_* settings pass through, and SIGINT stops every process it started."""
    process, state = devstack
    deadline = time.monotonic() + 90
    while not (state / "pids").exists():
        assert process.poll() is None, (tmp_path / "devstack.log").read_text()
        assert time.monotonic() < deadline, "devstack did not come up within 90 s"
        time.sleep(0.2)
    env = read_env(state / "env")
    assert env.keys() >= REQUIRED
    assert env["DEPOT_MAX_UPLOAD_BYTES"] == "1048576"

    def token(owner: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "depot_common.cli", "token", "--owner", owner],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    alice = {"Authorization": f"Bearer {token('alice')}"}
    bob = {"Authorization": f"Bearer {token('bob')}"}
    word = f"walrus{secrets.token_hex(3)}"
    with httpx.Client(timeout=30) as http:
        trace_id = secrets.token_hex(16)
        created = http.post(
            f"{env['DEPOT_API_URL']}/v1/documents",
            headers={**alice, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            files={"file": ("notes.txt", f"meeting notes about the {word}\n".encode(), "text/plain")},
        )
        assert created.status_code == 201, created.text
        document_id = created.json()["id"]
        started, found = time.monotonic(), False
        while not found and time.monotonic() - started < 5:
            hits = http.get(f"{env['DEPOT_SEARCH_URL']}/v1/search", params={"q": word}, headers=alice).json()["hits"]
            found = any(hit["document_id"] == document_id for hit in hits)
            time.sleep(0.05)
        assert found, "not searchable within 5 s"
        indexer_log = (state / "logs" / "indexer.log").read_text()
        assert any(trace_id in line and "consumer.applied" in line for line in indexer_log.splitlines()), (
            "the upload's trace id reaches the indexer's log lines"
        )
        assert http.get(f"{env['DEPOT_SEARCH_URL']}/v1/search", params={"q": word}, headers=bob).json()["hits"] == []
        assert http.get(f"{env['DEPOT_API_URL']}/v1/documents/{document_id}", headers=bob).status_code == 404
        too_big = http.post(
            f"{env['DEPOT_API_URL']}/v1/documents", headers=alice, files={"file": ("big.bin", b"x" * 1048577)}
        )
        assert too_big.status_code == 413, "DEPOT_MAX_UPLOAD_BYTES passed through to the service"

    pids = [int(line.split()[1]) for line in (state / "pids").read_text().splitlines()]
    assert len(pids) >= 6
    named = dict(line.split() for line in (state / "pids").read_text().splitlines())
    compensations_log = state / "logs" / "compensations.log"
    started = time.monotonic()
    while "compensations.started" not in compensations_log.read_text() and time.monotonic() - started < 20:
        time.sleep(0.2)
    assert "compensations.started" in compensations_log.read_text(), compensations_log.read_text()
    for name in ("compensations", "reconcile-relay"):
        assert alive(int(named[name])), (state / "logs" / f"{name}.log").read_text()
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert [pid for pid in pids if alive(pid)] == []


def test_make_dev_refuses_a_busy_port_and_stops_what_it_started(database_url: str, tmp_path: Path) -> None:
    """When a service port is taken, make dev says which setting to change, exits 1, and stops what it started."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")},
            "DEPOT_DATABASE_URL": database_url,
            "DEPOT_API_PORT": str(servers.free_port()),
            "DEPOT_SEARCH_PORT": str(port),
        }
        state = tmp_path / "devstack"
        result = subprocess.run(
            [sys.executable, "-m", "depot_devstack", "--state-dir", str(state), "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} for the search-api is already in use: free it or set DEPOT_SEARCH_PORT" in result.stderr
    assert "stopped every process it started" in result.stderr
