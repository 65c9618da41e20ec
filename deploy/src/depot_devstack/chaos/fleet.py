"""The servers and Depot processes of one chaos run, and the supervisor that restarts them.

The fleet owns everything it starts and stops it by pid (process group), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from depot_devstack import servers
from depot_devstack.servers import ManagedProcess

log = structlog.get_logger("chaos.fleet")


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised Depot process: ``python -m <module> <command>``."""

    name: str
    module: str
    command: str
    http: bool  # serves the API on DEPOT_HTTP_PORT (else /readyz on DEPOT_OPS_PORT)


#: The processes of a chaos run: replicas of everything that may run more than once.
SERVICES = (
    ServiceSpec("upload-api-1", "depot_upload", "serve", http=True),
    ServiceSpec("upload-api-2", "depot_upload", "serve", http=True),
    ServiceSpec("outbox-relay-1", "depot_upload", "relay", http=False),
    ServiceSpec("outbox-relay-2", "depot_upload", "relay", http=False),
    ServiceSpec("indexer-1", "depot_indexer", "consume", http=False),
    ServiceSpec("indexer-2", "depot_indexer", "consume", http=False),
    ServiceSpec("index-relay", "depot_indexer", "relay", http=False),
    ServiceSpec("search-api", "depot_indexer", "serve", http=True),
    ServiceSpec("compensations", "depot_upload", "compensate", http=False),
    ServiceSpec("reconcile-relay", "depot_reconciler", "relay", http=False),
)


@dataclass
class Supervised:
    """A service process and what the supervisor knows of it."""

    spec: ServiceSpec
    port: int
    log_path: Path
    process: ManagedProcess | None = None
    restarts: int = 0
    kills: int = 0
    crashes: list[str] = field(default_factory=list)  # exits we did not cause, once it had been ready
    startup_exits: int = 0  # exits before it ever became ready (a dependency down at start): restarted
    became_ready: bool = False
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    """PostgreSQL, broker, S3 and every supervised service of one run."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    postgres: ManagedProcess | None = None
    postgres_data: Path | None = None
    kafka: ManagedProcess | None = None
    s3: ManagedProcess | None = None
    services: list[Supervised] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)
    postgres_down: bool = False

    # --- servers ---------------------------------------------------------------------

    def start_servers(self, settings: dict[str, str]) -> None:
        """A private PostgreSQL cluster (it will be crashed), tansu and moto."""
        logs = self.state_dir / "logs"
        self.postgres, admin_url = servers.start_private_postgres(self.state_dir / "pgdata", logs)
        self.postgres_data = self.postgres.scratch or self.state_dir / "pgdata"
        database_url = servers.recreate_database(admin_url, "depot_chaos")
        self.kafka, bootstrap = servers.start_tansu(logs)
        self.s3, endpoint = servers.start_moto(logs)
        self.env = {
            "DEPOT_DATABASE_URL": database_url,
            "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
            "DEPOT_S3_ENDPOINT": endpoint,
            "DEPOT_S3_BUCKET": "depot-chaos",
            "DEPOT_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "depot-chaos",
            "AWS_SECRET_ACCESS_KEY": "depot-chaos-secret",
            "DEPOT_JWT_SECRET": "chaos-" + os.urandom(16).hex(),
            "DEPOT_LOG_FORMAT": "json",
            **settings,
        }

    def crash_postgres(self) -> None:
        """``pg_ctl stop -m immediate``: every backend dies, no shutdown checkpoint (a crash)."""
        assert self.postgres is not None
        assert self.postgres_data is not None
        pg_ctl = servers.postgres_bin("pg_ctl")
        assert pg_ctl is not None, "pg_ctl not found"
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(  # noqa: S603 - our argv
            [*prefix, pg_ctl, "-D", str(self.postgres_data), "stop", "-m", "immediate"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.postgres.popen.wait(30)
        self.postgres_down = True

    def restart_postgres(self) -> None:
        """Start the crashed cluster again on the same port and data (crash recovery runs)."""
        assert self.postgres is not None
        argv = [str(arg) for arg in self.postgres.popen.args]  # type: ignore[union-attr]
        scratch, log_path = self.postgres.scratch, self.postgres.log_path
        self.postgres = servers.spawn("postgres", argv, log_path=log_path)
        self.postgres.scratch = scratch
        self.postgres_down = False

    def pause(self, name: str) -> None:
        """Freeze the broker (``kafka``) or S3 (``s3``): connections hang, nothing answers."""
        process = self.kafka if name == "kafka" else self.s3
        assert process is not None
        os.killpg(process.pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        process = self.kafka if name == "kafka" else self.s3
        assert process is not None
        os.killpg(process.pid, signal.SIGCONT)
        self.paused.discard(name)

    # --- services --------------------------------------------------------------------

    def start_services(self, specs: tuple[ServiceSpec, ...] = SERVICES) -> None:
        for spec in specs:
            item = Supervised(spec, servers.free_port(), self.state_dir / "logs" / f"{spec.name}.log")
            self.services.append(item)
            self._spawn(item)

    def _spawn(self, item: Supervised) -> None:
        env = {**os.environ, **self.env, "DEPOT_REPLICA_ID": item.spec.name}
        env["DEPOT_HTTP_PORT" if item.spec.http else "DEPOT_OPS_PORT"] = str(item.port)
        item.process = servers.spawn(
            item.spec.name, [sys.executable, "-m", item.spec.module, item.spec.command], env=env, log_path=item.log_path
        )
        item.started_at = time.monotonic()
        item.became_ready = False

    def kill(self, item: Supervised) -> None:
        """SIGKILL a service (its supervisor restarts it)."""
        if item.process is not None and item.process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.process.pid, signal.SIGKILL)
            item.kills += 1
            log.info("chaos.kill", service=item.spec.name, pid=item.process.pid)

    async def supervise(self, stop: asyncio.Event, *, backoff: float = 0.5) -> None:
        """Restart any service that exited, like a process supervisor would."""
        while not stop.is_set():
            for item in self.services:
                if item.process is not None and not item.process.alive():
                    code = item.process.popen.returncode
                    if code != -signal.SIGKILL and item.became_ready:
                        item.crashes.append(f"{item.spec.name} exited {code}: {self._last_error(item)}")
                    elif code != -signal.SIGKILL:
                        item.startup_exits += 1
                    await asyncio.sleep(backoff)
                    log.info("chaos.restart", service=item.spec.name, code=code)
                    item.restarts += 1
                    self._spawn(item)
                elif item.process is not None and not item.became_ready:
                    item.became_ready = await asyncio.to_thread(self.ready, item)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    @staticmethod
    def _last_error(item: Supervised) -> str:
        lines = item.log_path.read_text(errors="replace").splitlines() if item.log_path.exists() else []
        errors = [line for line in lines[-200:] if "Error" in line or "error" in line]
        return (errors or lines or ["(no output)"])[-1][-300:]

    def ready(self, item: Supervised) -> bool:
        try:
            with urllib.request.urlopen(item.url + "/readyz", timeout=2) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, limit_s: float) -> float:
        """Wait until every service answers /readyz 200; return how long it took."""
        started = time.monotonic()
        while True:
            waiting = [item.spec.name for item in self.services if not await asyncio.to_thread(self.ready, item)]
            if not waiting:
                return time.monotonic() - started
            if time.monotonic() - started > limit_s:
                raise TimeoutError(f"not ready after {limit_s:.0f} s: {', '.join(waiting)}")
            await asyncio.sleep(0.3)

    def api_urls(self) -> list[str]:
        upload = ("depot_upload", "serve")
        return [item.url for item in self.services if (item.spec.module, item.spec.command) == upload]

    def search_url(self) -> str:
        return next(item.url for item in self.services if item.spec.name == "search-api")

    def stop(self) -> None:
        """Stop everything this run started (resuming paused servers first)."""
        for name in list(self.paused):
            with contextlib.suppress(ProcessLookupError):
                self.resume(name)
        for item in self.services:
            if item.process is not None:
                item.process.stop(grace=5)
        for process in (self.s3, self.kafka, self.postgres):
            if process is not None:
                process.stop(grace=10)


def unhandled_errors(logs: dict[str, Path]) -> list[str]:
    """Every request a service answered with an unhandled error (500), from its JSON log: a client that had
    already given up never sees that answer; the logs (and the 5xx alert) do."""
    found = []
    for name, path in logs.items():
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if '"event": "http.unhandled_error"' in line:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {}
                found.append(f"{name} log {record.get('timestamp', '')}: {_exception_type(record)}")
    return found


def _exception_type(record: dict[str, Any]) -> str:
    """The innermost exception type and value of a structlog JSON record's ``exception`` (dict or text)."""
    exception = record.get("exception")
    if isinstance(exception, list) and exception and isinstance(exception[-1], dict):
        return f"{exception[-1].get('exc_type')}: {str(exception[-1].get('exc_value'))[:200]}"
    return str(exception)[-200:]
