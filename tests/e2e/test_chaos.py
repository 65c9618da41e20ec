"""The short chaos soak, as make test runs it: faults injected, then the invariants of docs/invariants.md counted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
@pytest.mark.timeout(480)
def test_short_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    """Kills, an S3 pause, a broker pause and a PostgreSQL crash under load: nothing lost, no DLQ, no 500."""
    seed = os.environ.get("DEPOT_CHAOS_SEED", "11")
    result = subprocess.run(
        [sys.executable, "-m", "depot_devstack.chaos", "--short", "--seed", seed, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=450,
        check=False,
    )
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{line}\n{result.stderr[-6000:]}"
    figures = dict(re.findall(r"(\w+)=(-?\d+)", line))
    assert int(figures["acked"]) > 20, line  # the workload really ran (~120 on an idle machine)
    assert all(int(value) == 0 for name, value in figures.items() if name not in {"acked", "deleted"}), line
