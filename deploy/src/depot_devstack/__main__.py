"""``make dev``: the whole of Depot on this machine, on real protocols, no Docker.

Starts (or finds) PostgreSQL, a Kafka-protocol broker (tansu) and an S3-protocol server
(moto), then every Depot process; prints the URLs; writes ``.devstack/env``; and on
Ctrl-C (SIGINT) or SIGTERM stops every process it started.

The broker and S3 server keep their data in memory, so when it owns its database
(``depot_dev``) it recreates it empty at every start: PostgreSQL then never refers to
bytes or events that no longer exist. With ``DEPOT_DATABASE_URL`` set, it uses that
database as it is. Every ``DEPOT_*`` variable in the environment passes through to the
services (``DEPOT_MAX_UPLOAD_BYTES=1048576 make dev``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from depot_common.auth import mint_token
from depot_devstack.servers import (
    ManagedProcess,
    StackError,
    admin_database_url,
    free_port,
    port_open,
    recreate_database,
    spawn,
    start_moto,
    start_tansu,
    wait_until,
)

DEV_DATABASE = "depot_dev"
SERVICES = [
    # name, argv after the interpreter, readiness URL key
    ("upload-api", ["-m", "depot_upload", "serve"]),
    ("outbox-relay", ["-m", "depot_upload", "relay"]),
    ("search-api", ["-m", "depot_indexer", "serve"]),
    ("indexer", ["-m", "depot_indexer", "consume"]),
    ("index-relay", ["-m", "depot_indexer", "relay"]),
    ("compensations", ["-m", "depot_upload", "compensate"]),
    ("reconcile-relay", ["-m", "depot_reconciler", "relay"]),
    ("reconciler", ["-m", "depot_reconciler", "serve"]),
]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tee(process: ManagedProcess, name: str, log_file: Path, quiet: bool) -> None:
    """Copy a child's output to its log file and, prefixed, to the terminal."""
    assert process.popen.stdout is not None
    with log_file.open("ab") as sink:
        for line in process.popen.stdout:
            sink.write(line)
            sink.flush()
            if not quiet:
                sys.stderr.write(f"{name:>13} | {line.decode(errors='replace')}")


class DevStack:
    def __init__(self, state_dir: Path, *, quiet: bool) -> None:
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.quiet = quiet
        self.processes: list[ManagedProcess] = []

    def start(self) -> dict[str, str]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        given = {key: value for key, value in os.environ.items() if key.startswith("DEPOT_")}
        env: dict[str, str] = {}
        if given.get("DEPOT_DATABASE_URL"):
            env["DEPOT_DATABASE_URL"] = given["DEPOT_DATABASE_URL"]
            self._say("PostgreSQL: using DEPOT_DATABASE_URL as it is")
        else:
            admin_url, postgres = admin_database_url(self.state_dir / "pgdata", self.log_dir)
            if postgres is not None:
                self.processes.append(postgres)
            env["DEPOT_DATABASE_URL"] = recreate_database(admin_url, DEV_DATABASE)
            self._say(f"PostgreSQL: database {DEV_DATABASE} recreated empty")
        kafka, bootstrap = start_tansu(self.log_dir)
        self.processes.append(kafka)
        s3, endpoint = start_moto(self.log_dir)
        self.processes.append(s3)
        api_port = int(given.get("DEPOT_API_PORT", "8000"))
        search_port = int(given.get("DEPOT_SEARCH_PORT", "8001"))
        env.update(
            {
                "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
                "DEPOT_S3_ENDPOINT": endpoint,
                "DEPOT_S3_BUCKET": "depot-dev",
                "DEPOT_S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "depot-dev",
                "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
                "DEPOT_JWT_SECRET": secrets.token_urlsafe(32),
                "DEPOT_LOG_FORMAT": "console",
            }
        )
        env.update({k: v for k, v in given.items() if k not in {"DEPOT_KAFKA_BOOTSTRAP", "DEPOT_S3_ENDPOINT"}})
        env["DEPOT_API_URL"] = f"http://127.0.0.1:{api_port}"
        env["DEPOT_SEARCH_URL"] = f"http://127.0.0.1:{search_port}"
        reconciler_port = int(given.get("DEPOT_RECONCILER_PORT", "8002"))
        env["DEPOT_RECONCILER_URL"] = f"http://127.0.0.1:{reconciler_port}"
        # the web console at DEPOT_API_URL calls the search and reconciler APIs and PUTs to S3 from the browser
        console = env["DEPOT_API_URL"]
        env.setdefault("DEPOT_PUBLIC_SEARCH_URL", env["DEPOT_SEARCH_URL"])
        env.setdefault("DEPOT_PUBLIC_RECONCILER_URL", env["DEPOT_RECONCILER_URL"])
        for origins in ("DEPOT_ALLOWED_ORIGINS", "DEPOT_S3_CORS_ORIGINS"):
            given_origins = [item for item in env.get(origins, "").split(",") if item.strip()]
            env[origins] = ",".join(dict.fromkeys([*given_origins, console]))
        ports = {"upload-api": api_port, "search-api": search_port, "reconciler": reconciler_port}
        for name, port in ports.items():
            if port_open("127.0.0.1", port):
                variable = {"upload-api": "DEPOT_API_PORT", "search-api": "DEPOT_SEARCH_PORT"}.get(
                    name, "DEPOT_RECONCILER_PORT"
                )
                raise StackError(f"port {port} for the {name} is already in use: free it or set {variable}")
        for name, args in SERVICES:
            child_env = {**os.environ, **env}
            if name in ports:
                child_env["DEPOT_HTTP_PORT"] = str(ports[name])
            else:
                child_env["DEPOT_OPS_PORT"] = str(free_port())
            process = spawn(name, [sys.executable, *args], env=child_env, stdout=-1)
            self.processes.append(process)
            threading.Thread(
                target=_tee, args=(process, name, self.log_dir / f"{name}.log", self.quiet), daemon=True
            ).start()
        for name, url in (
            ("upload API", env["DEPOT_API_URL"]),
            ("search API", env["DEPOT_SEARCH_URL"]),
            ("reconciler", env["DEPOT_RECONCILER_URL"]),
        ):
            wait_until(lambda url=url: _http_ok(url + "/readyz"), timeout=60, what=name)  # type: ignore[misc]
        self._write_env(env)
        (self.state_dir / "pids").write_text("".join(f"{p.name} {p.pid}\n" for p in self.processes))
        return env

    def _write_env(self, env: dict[str, str]) -> None:
        path = self.state_dir / "env"
        lines = [f"{key}={value}" for key, value in sorted(env.items())]
        path.write_text("# written by make dev; source it: set -a; . .devstack/env; set +a\n" + "\n".join(lines) + "\n")
        path.chmod(0o600)

    def _say(self, message: str) -> None:
        sys.stderr.write(f"devstack: {message}\n")

    def watch(self, stop: threading.Event) -> int:
        """Wait for a signal or for a process to die; 0 on a signal, 1 on a death."""
        while not stop.wait(0.5):
            for process in self.processes:
                if not process.alive():
                    self._say(f"{process.name} exited with code {process.popen.returncode}; stopping")
                    return 1
        return 0

    def stop(self) -> None:
        """The services all at once (each drains on its own, so their grace periods overlap instead of adding
        up), then the servers they used (PostgreSQL, Kafka, S3), likewise."""
        services = {name for name, _ in SERVICES}
        for wave in (
            [p for p in self.processes if p.name in services],
            [p for p in self.processes if p.name not in services],
        ):
            for process in wave:
                process.terminate()
            for process in reversed(wave):
                process.stop()
        self._say("stopped every process it started")


def _banner(env: dict[str, str], state_dir: Path) -> str:
    api, search = env["DEPOT_API_URL"], env["DEPOT_SEARCH_URL"]
    link = f"{api}/#token={mint_token(env['DEPOT_JWT_SECRET'], 'alice', admin=True, ttl=8 * 3600)}"
    return f"""
Depot is running.
  web console  {link}
               (alice, admin, 8 h; others: .venv/bin/depot token --owner NAME --link)
  upload API   {api}      (docs: {api}/docs)
  search API   {search}
  reconciler   {env["DEPOT_RECONCILER_URL"]}
  Kafka        {env["DEPOT_KAFKA_BOOTSTRAP"]}
  S3           {env["DEPOT_S3_ENDPOINT"]}  bucket {env["DEPOT_S3_BUCKET"]}
  PostgreSQL   {env["DEPOT_DATABASE_URL"]}
  logs         {state_dir / "logs"}

Try it (another terminal):
  set -a; . {state_dir / "env"}; set +a
  TOKEN=$(.venv/bin/depot token --owner alice)
  echo "hello depot" > notes.txt
  curl -s -H "Authorization: Bearer $TOKEN" -F file=@notes.txt $DEPOT_API_URL/v1/documents
  curl -s -H "Authorization: Bearer $TOKEN" "$DEPOT_SEARCH_URL/v1/search?q=hello"

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depot-devstack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("DEPOT_DEVSTACK_DIR", ".devstack")))
    parser.add_argument("--quiet", action="store_true", help="service logs to files only")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = DevStack(args.state_dir.resolve(), quiet=args.quiet)
    started = time.monotonic()
    try:
        env = stack.start()
        sys.stderr.write(_banner(env, args.state_dir) + f"(ready in {time.monotonic() - started:.1f} s)\n")
        return stack.watch(stop)
    except StackError as error:
        sys.stderr.write(f"devstack: {error}\n")
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
