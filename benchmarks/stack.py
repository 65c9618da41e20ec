"""The servers a benchmark run uses, started once, and Depot service processes on them.

PostgreSQL (a fresh database, dropped at the end), a tansu broker and a moto S3 server
come from ``depot_devstack.servers``, the same code ``make dev`` and the tests use. Service
processes (upload API, outbox relay, indexer, search API) are started with the commands
``make dev`` runs; a benchmark may give them a database of its own
(:meth:`Stack.database`). Every process is stopped by its pid when the run ends, whatever
way it ends.
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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
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
class Service:
    """A running Depot service process; ``url`` is set for the HTTP ones."""

    name: str
    process: servers.ManagedProcess
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        """Raise when the process has exited (a benchmark waiting on it would wait forever)."""
        if not self.process.alive():
            raise servers.StackError(
                f"{self.name} exited with code {self.process.popen.returncode}; see {self.process.log_path}"
            )


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
    admin_url: str
    database_url: str
    kafka_bootstrap: str
    kafka_process: servers.ManagedProcess
    s3_endpoint: str
    s3_process: servers.ManagedProcess
    bucket: str = "depot-bench"
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    access_key: str = "depot-bench"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _process_count: int = 0
    databases: list[str] = field(default_factory=list)
    """Names of the databases :meth:`database` created (dropped again at the end of the run)."""

    @property
    def s3_pid(self) -> int:
        return self.s3_process.pid

    @property
    def kafka_pid(self) -> int:
        return self.kafka_process.pid

    def env(self, database_url: str | None = None) -> dict[str, str]:
        """The environment a service process of this run gets (plus ``PATH`` etc.)."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("DEPOT_")}
        return {
            **inherited,
            "DEPOT_DATABASE_URL": database_url or self.database_url,
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
        """An aiobotocore S3 client configured exactly as the upload API's, bucket ensured."""
        async with s3_client(self.settings()) as client:
            await ensure_bucket(client, self.bucket)
            yield client

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh empty database on the run's server (its URL), dropped after the block.

        Benchmarks that start their own services use one, so what earlier benchmarks left
        behind (an unpublished outbox, index entries) cannot leak into their figures.
        """
        self._process_count += 1
        name = f"{self.database_url.rsplit('/', 1)[1]}_{self._process_count}"
        self.databases.append(name)
        url = await asyncio.to_thread(servers.recreate_database, self.admin_url, name)
        try:
            yield url
        finally:
            await asyncio.to_thread(servers.drop_database, self.admin_url, name)

    @contextlib.asynccontextmanager
    async def service(
        self,
        name: str,
        args: Sequence[str],
        *,
        http: bool = False,
        python_args: Sequence[str] = (),
        database_url: str | None = None,
        environment: Mapping[str, str] | None = None,
        **overrides: str,
    ) -> AsyncIterator[Service]:
        """Start ``python [python_args] ARGS`` (e.g. ``-m depot_indexer consume``) with ``DEPOT_<NAME>`` overrides.

        ``http`` ones get a free port and are waited for until ``/readyz`` answers 200; the
        process is stopped after the block. ``python_args`` run it under a tool, e.g.
        ``["-m", "cProfile", "-o", path]``; ``environment`` adds other variables (``OTEL_*``).
        """
        self._process_count += 1
        env = self.env(database_url) | {f"DEPOT_{key.upper()}": value for key, value in overrides.items()}
        env |= environment or {}
        url = ""
        if http:
            port = servers.free_port()
            env["DEPOT_HTTP_PORT"] = str(port)
            url = f"http://127.0.0.1:{port}"
        process = servers.spawn(
            name,
            [sys.executable, *python_args, *args],
            env=env,
            log_path=self.log_dir / f"{name}-{self._process_count}.log",
        )
        try:
            service = Service(name=name, process=process, url=url)
            if http:
                await _wait_ready(service)
            yield service
        finally:
            if python_args:
                await asyncio.to_thread(_interrupt, process)
            await asyncio.to_thread(process.stop)

    @contextlib.asynccontextmanager
    async def api(
        self,
        python_args: Sequence[str] = (),
        database_url: str | None = None,
        environment: Mapping[str, str] | None = None,
        **overrides: str,
    ) -> AsyncIterator[Api]:
        """Start ``python [python_args] -m depot_upload serve`` with ``DEPOT_<NAME>`` overrides; stop it after.

        ``python_args`` run it under a tool, e.g. ``["-m", "cProfile", "-o", path]``.
        """
        async with self.service(
            "upload-api",
            ["-m", "depot_upload", "serve"],
            http=True,
            python_args=python_args,
            database_url=database_url,
            environment=environment,
            **overrides,
        ) as service:
            yield Api(url=service.url, process=service.process, token=mint_token(self.jwt_secret, "bench", ttl=3600))


@contextlib.asynccontextmanager
async def together(*managers: contextlib.AbstractAsyncContextManager[Any]) -> AsyncIterator[list[Any]]:
    """Enter ``managers`` concurrently (start several processes at once); exit every one after.

    When one fails to enter, those that did are exited before the error propagates.
    """
    async with contextlib.AsyncExitStack() as exits:
        entered = await asyncio.gather(*(manager.__aenter__() for manager in managers), return_exceptions=True)
        for manager, value in zip(managers, entered, strict=True):
            if not isinstance(value, BaseException):
                exits.push_async_exit(manager.__aexit__)
        for value in entered:
            if isinstance(value, BaseException):
                raise value
        yield list(entered)


def _interrupt(process: servers.ManagedProcess, grace: float = 30.0) -> None:
    """SIGINT and wait: uvicorn re-raises SIGTERM after its shutdown, which kills the process
    before a tool such as cProfile writes its output; SIGINT ends as a KeyboardInterrupt."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(grace)


async def _wait_ready(service: Service) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            service.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(service.url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise servers.StackError(f"{service.name} not ready within {READY_TIMEOUT:.0f} s; see {service.process.log_path}")


# servers.start_tansu/start_moto leave their process running when it never gets ready (or
# on Ctrl-C while waiting): these register the stop before waiting.


def _start_tansu(cleanup: contextlib.ExitStack, log_dir: Path) -> tuple[servers.ManagedProcess, str]:
    port = servers.free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [servers.tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    process = servers.spawn("kafka", argv, log_path=log_dir / "kafka.log")
    cleanup.callback(process.stop)
    servers.wait_until(lambda: servers.port_open("127.0.0.1", port), timeout=30, what="tansu", process=process)
    return process, f"127.0.0.1:{port}"


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


def _drop_all(admin_url: str, names: list[str]) -> None:
    for name in names:
        servers.drop_database(admin_url, name)


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
            kafka, bootstrap = _start_tansu(cleanup, log_dir)
            s3, endpoint = _start_moto(cleanup, log_dir)
            stack = Stack(
                log_dir=log_dir,
                admin_url=admin_url,
                database_url=database_url,
                kafka_bootstrap=bootstrap,
                kafka_process=kafka,
                s3_endpoint=endpoint,
                s3_process=s3,
            )
            cleanup.callback(_drop_all, admin_url, stack.databases)  # those an interrupted benchmark left
            try:
                yield stack
            except KeyboardInterrupt:
                clean = True  # stopped on purpose: the logs explain nothing
                raise
        clean = True
    finally:
        if clean:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            sys.stderr.write(f"benchmarks: server logs kept in {log_dir}\n")
