"""Depot services as real processes, for tests that kill or fuzz them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from depot_devstack import servers


@contextmanager
def api_process(stack_env: dict[str, str], log: Path, **extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`depot-upload serve` as a real process on a free port, with extra DEPOT_* settings."""
    with service_process("depot_upload", stack_env, log, **extra) as running:
        yield running


@contextmanager
def service_process(
    module: str, stack_env: dict[str, str], log: Path, **extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m <module> serve` (a Depot HTTP service) as a real process on a free port, stopped on exit."""
    with service_processes({module: log}, stack_env, **extra) as running:
        yield running[module]


@contextmanager
def service_processes(
    logs: dict[str, Path], stack_env: dict[str, str], **extra: str
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], str]]]:
    """`python -m <module> serve` for each module (started together, each on a free port), stopped on exit."""
    with started({module: (module, log, extra) for module, log in logs.items()}, stack_env) as running:
        yield running


@contextmanager
def crashing_apis(
    stack_env: dict[str, str], log_dir: Path, points: Sequence[str]
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], str]]]:
    """One `depot-upload serve` per crash point (``DEPOT_CRASH_AT``), started together; by point."""
    specs = {point: ("depot_upload", log_dir / f"api-{point}.log", {"DEPOT_CRASH_AT": point}) for point in points}
    with started(specs, stack_env) as running:
        yield running


@contextmanager
def started(
    specs: dict[str, tuple[str, Path, dict[str, str]]], stack_env: dict[str, str]
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], str]]]:
    """`python -m <module> serve` per name (module, log, extra env), started together, each on a free port."""
    running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, (module, log, extra) in specs.items():
            port = servers.free_port()
            env = {**os.environ, **stack_env, "DEPOT_HTTP_PORT": str(port), **extra}
            with log.open("ab") as sink:
                command = [sys.executable, "-m", module, "serve"]
                running[name] = (
                    subprocess.Popen(command, env=env, stdout=sink, stderr=sink),
                    f"http://127.0.0.1:{port}",
                )
        deadline = time.monotonic() + 300  # a loaded machine imports slowly
        for name, (process, url) in running.items():
            while True:
                assert process.poll() is None, specs[name][1].read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.1)
        yield running
    finally:
        for process, _ in running.values():
            if process.poll() is None:
                process.terminate()
        for process, _ in running.values():
            process.wait(10)
