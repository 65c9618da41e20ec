"""The servers a benchmark run uses, started once, and upload API processes on them.

PostgreSQL (a fresh database, dropped at the end), a tansu broker and a moto S3 server
come from ``depot_devstack.servers``, the same code ``make dev`` and the tests use. Every
process is stopped by its pid when the run ends, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from depot_common.auth import mint_token
from depot_common.s3 import ensure_bucket, s3_client
from depot_devstack import servers
from depot_upload.settings import UploadSettings

READY_TIMEOUT = 60.0


@dataclass
class Api:
    """A running upload API process."""

    url: str
    process: servers.ManagedProcess
    token: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Stack:
    """Servers for one benchmark run: PostgreSQL database, Kafka protocol, S3 protocol."""

    log_dir: Path
    database_url: str
    kafka_bootstrap: str
    s3_endpoint: str
    s3_process: servers.ManagedProcess
    bucket: str = "depot-bench"
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    access_key: str = "depot-bench"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _api_count: int = 0

    @property
    def s3_pid(self) -> int:
        return self.s3_process.pid

    def env(self) -> dict[str, str]:
        """The environment an upload API process of this run gets (plus ``PATH`` etc.)."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("DEPOT_")}
        return {
            **inherited,
            "DEPOT_DATABASE_URL": self.database_url,
            "DEPOT_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "DEPOT_S3_ENDPOINT": self.s3_endpoint,
            "DEPOT_S3_BUCKET": self.bucket,
            "DEPOT_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "DEPOT_JWT_SECRET": self.jwt_secret,
            "DEPOT_LOG_FORMAT": "json",
            "DEPOT_LOG_LEVEL": "warning",
        }

    def settings(self) -> UploadSettings:
        """Settings equal to the API's, to build the same S3 client it uses."""
        env = self.env()
        return UploadSettings.model_validate(
            {key.removeprefix("DEPOT_").lower(): value for key, value in env.items() if key.startswith("DEPOT_")}
            | {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        )

    @contextlib.asynccontextmanager
    async def s3(self) -> AsyncIterator[Any]:
        """An aioboto3 S3 client configured exactly as the upload API's, bucket ensured."""
        async with s3_client(self.settings()) as client:
            await ensure_bucket(client, self.bucket)
            yield client

    @contextlib.asynccontextmanager
    async def api(self, python_args: Sequence[str] = (), **overrides: str) -> AsyncIterator[Api]:
        """Start ``python [python_args] -m depot_upload serve`` with ``DEPOT_<NAME>`` overrides; stop it after.

        ``python_args`` run it under a tool, e.g. ``["-m", "cProfile", "-o", path]``.
        """
        self._api_count += 1
        port = servers.free_port()
        env = self.env() | {f"DEPOT_{key.upper()}": value for key, value in overrides.items()}
        env["DEPOT_HTTP_PORT"] = str(port)
        process = servers.spawn(
            "upload-api",
            [sys.executable, *python_args, "-m", "depot_upload", "serve"],
            env=env,
            log_path=self.log_dir / f"upload-api-{self._api_count}.log",
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_ready(url, process)
            yield Api(url=url, process=process, token=mint_token(self.jwt_secret, "bench", ttl=3600))
        finally:
            if python_args:
                await asyncio.to_thread(_interrupt, process)
            await asyncio.to_thread(process.stop)


def _interrupt(process: servers.ManagedProcess, grace: float = 30.0) -> None:
    """SIGINT and wait: uvicorn re-raises SIGTERM after its shutdown, which kills the process
    before a tool such as cProfile writes its output; SIGINT ends as a KeyboardInterrupt."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(grace)


async def _wait_ready(url: str, process: servers.ManagedProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if not process.alive():
                raise servers.StackError(
                    f"upload API exited with code {process.popen.returncode}; see {process.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise servers.StackError(f"upload API not ready within {READY_TIMEOUT:.0f} s; see {process.log_path}")


# servers.start_tansu/start_moto leave their process running when it never gets ready (or
# on Ctrl-C while waiting): these register the stop before waiting.


def _start_tansu(cleanup: contextlib.ExitStack, log_dir: Path) -> str:
    port = servers.free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [servers.tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    process = servers.spawn("kafka", argv, log_path=log_dir / "kafka.log")
    cleanup.callback(process.stop)
    servers.wait_until(lambda: servers.port_open("127.0.0.1", port), timeout=30, what="tansu", process=process)
    return f"127.0.0.1:{port}"


def _start_moto(cleanup: contextlib.ExitStack, log_dir: Path) -> tuple[servers.ManagedProcess, str]:
    port = servers.free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    process = servers.spawn("s3", [binary, "-H", "127.0.0.1", "-p", str(port)], log_path=log_dir / "s3.log")
    cleanup.callback(process.stop)
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(endpoint + "/moto-api/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    servers.wait_until(ready, timeout=30, what="moto S3 server", process=process)
    return process, endpoint


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    """Start the servers (and a fresh database); stop and drop them all on exit.

    Logs go to a temporary directory, removed after a clean run and kept (and named on
    stderr) when the run failed.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="depot-bench-"))
    clean = False
    try:
        with contextlib.ExitStack() as cleanup:
            admin_url, postgres = servers.admin_database_url(log_dir / "pgdata", log_dir)
            if postgres is not None:
                cleanup.callback(postgres.stop)
            name = f"depot_bench_{secrets.token_hex(4)}"
            cleanup.callback(servers.drop_database, admin_url, name)
            database_url = servers.recreate_database(admin_url, name)
            bootstrap = _start_tansu(cleanup, log_dir)
            s3, endpoint = _start_moto(cleanup, log_dir)
            try:
                yield Stack(
                    log_dir=log_dir,
                    database_url=database_url,
                    kafka_bootstrap=bootstrap,
                    s3_endpoint=endpoint,
                    s3_process=s3,
                )
            except KeyboardInterrupt:
                clean = True  # stopped on purpose: the logs explain nothing
                raise
        clean = True
    finally:
        if clean:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            sys.stderr.write(f"benchmarks: server logs kept in {log_dir}\n")
