"""Every metric the alert rules and the Grafana dashboard use is exported by a running process."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from depot_devstack import servers

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"depot-upload": "depot_upload", "depot-indexer": "depot_indexer", "depot-reconciler": "depot_reconciler"}


def long_running_processes() -> list[tuple[str, str]]:
    """(program, command) of every serve/relay/consume/compensate row of README's processes table."""
    section = (ROOT / "README.md").read_text().split("## Processes", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^\| `(depot-[a-z]+) ([a-z]+)", section, flags=re.MULTILINE)
    return sorted({item for item in found if item[1] in {"serve", "relay", "consume", "compensate"}})


def used_metrics() -> set[str]:
    rules = (ROOT / "deploy" / "observability" / "alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy" / "observability" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return set(re.findall(r"\bdepot_[a-z_]+", rules + "\n".join(exprs)))


def exported(text: str) -> set[str]:
    """Metric names in a Prometheus exposition, with the sample suffixes of counters and histograms."""
    names = set()
    for family in re.findall(r"^# TYPE (\S+) (\S+)", text, flags=re.MULTILINE):
        name, kind = family
        names.add(name)
        if kind == "counter":
            names |= {name + "_total", name + "_created"}
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count", name + "_created"}
    return names


@pytest.fixture(scope="module")
def scraped(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Start every long-running process for real and scrape its /metrics once."""
    logs = tmp_path_factory.mktemp("metrics-processes")
    started = []
    for program, command in long_running_processes():
        port = servers.free_port()
        variable = "DEPOT_HTTP_PORT" if command == "serve" else "DEPOT_OPS_PORT"
        process = servers.spawn(
            f"{program}-{command}",
            [sys.executable, "-m", MODULES[program], command],
            env={**os.environ, **stack_env, variable: str(port)},
            log_path=logs / f"{program}-{command}.log",
        )
        started.append((f"{program} {command}", port, process))
    try:
        found: dict[str, set[str]] = {}
        deadline = time.monotonic() + 90
        for name, port, process in started:
            while name not in found:
                assert process.alive(), f"{name} exited: {process.log_path.read_text()[-3000:]}"  # type: ignore[union-attr]
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    if response.status_code == 200:
                        found[name] = exported(response.text)
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{name} served no /metrics"
                time.sleep(0.2)
        yield found
    finally:
        for _, _, process in started:
            process.stop()


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(scraped: dict[str, set[str]]) -> None:
    """A renamed or removed metric breaks an alert silently; here it fails the build instead."""
    available = set().union(*scraped.values())
    assert len(scraped) == len(long_running_processes())
    assert used_metrics(), "no metric found in the rules or the dashboard"
    assert used_metrics() - available == set()
