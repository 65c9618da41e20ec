"""Depot services as real processes, for tests that kill or fuzz them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from depot_devstack import servers


@contextmanager
def api_process(stack_env: dict[str, str], log: Path, **extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`depot-upload serve` as a real process on a free port, with extra DEPOT_* settings."""
    port = servers.free_port()
    env = {**os.environ, **stack_env, "DEPOT_HTTP_PORT": str(port), **extra}
    with log.open("ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "depot_upload", "serve"], env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "upload API did not start"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
