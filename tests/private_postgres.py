"""A private PostgreSQL cluster a test may crash (``pg_ctl stop -m immediate``) and start again on the same port."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from depot_devstack import servers


class PrivateCluster:
    def __init__(self, work_dir: Path) -> None:
        self.process, self.url = servers.start_private_postgres(work_dir / "pgdata", work_dir)
        argv = [str(arg) for arg in self.process.popen.args]  # type: ignore[union-attr]
        self._argv = argv
        self._data_dir = argv[argv.index("-D") + 1]
        self.port = int(argv[argv.index("-p") + 1])
        self._prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def crash(self) -> None:
        """Stop the server the way a crash does: no checkpoint, every backend killed at once."""
        pg_ctl = servers.postgres_bin("pg_ctl")
        assert pg_ctl is not None
        subprocess.run([*self._prefix, pg_ctl, "stop", "-D", self._data_dir, "-m", "immediate"], check=True)
        self.process.popen.wait(30)

    def start(self) -> None:
        """Start it again on the same data directory and port, and wait until it accepts connections: it listens
        during crash recovery already, refusing connections ("not yet accepting connections") until it is done."""
        scratch, self.process.scratch = self.process.scratch, None
        self.process = servers.spawn("postgres", self._argv, log_path=self.process.log_path)
        self.process.scratch = scratch
        pg_isready = servers.postgres_bin("pg_isready")
        assert pg_isready is not None
        servers.wait_until(
            lambda: (
                subprocess.run([pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False).returncode == 0
            ),
            timeout=30,
            what="PostgreSQL",
            process=self.process,
        )

    def stop(self) -> None:
        self.process.stop()

    def database(self, name: str) -> str:
        return servers.recreate_database(self.url, name)
