"""What a benchmark returns, and how a run is shown (rich tables) and kept (JSON)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.procfs import machine_busy_seconds


@dataclass(frozen=True)
class Check:
    """A target: ``value`` must be ``>= target`` (``higher_is_better``) or ``< target``."""

    name: str
    value: float
    target: float
    unit: str = ""
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value < self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 4),
            "target": self.target,
            "unit": self.unit,
            "comparison": ">=" if self.higher_is_better else "<",
            "passed": self.passed,
        }


@dataclass
class Result:
    """One benchmark's figures (for JSON), tables (for people) and targets."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"figures": self.figures, "checks": [check.to_json() for check in self.checks], "notes": self.notes}


def table(title: str, columns: list[str]) -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        result.add_column(column, justify="left" if index == 0 else "right")
    return result


def show(console: Console, results: list[Result]) -> None:
    for result in results:
        for item in result.tables:
            console.print(item)
        for note in result.notes:
            console.print(f"  [dim]{note}[/dim]")
        console.print()
    targets = table("Targets", ["check", "value", "target", "result"])
    for result in results:
        for check in result.checks:
            comparison = ">=" if check.higher_is_better else "<"
            targets.add_row(
                f"{result.name}: {check.name}",
                f"{check.value:.3g} {check.unit}".strip(),
                f"{comparison} {check.target:g} {check.unit}".strip(),
                "[green]pass[/green]" if check.passed else "[red]MISS[/red]",
            )
    console.print(targets)


def machine() -> dict[str, Any]:
    """The host, and how busy it already is (other work on it skews every figure)."""
    before = machine_busy_seconds()
    time.sleep(1.0)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        "busy_cores_before_run": round(machine_busy_seconds() - before, 2),
        "git": _git(),
    }


def _git() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""
    git = shutil.which("git")
    if git is None:
        return {}
    try:
        commit, status = (
            subprocess.run([git, *args], capture_output=True, text=True, check=True).stdout  # noqa: S603 - argv is ours
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def write(
    directory: Path, results: list[Result], *, started: datetime, options: dict[str, Any], host: dict[str, Any]
) -> Path:
    """Write ``<UTC timestamp>.json`` and ``latest.json`` under ``directory``; return the first.

    ``host`` is :func:`machine` taken when the run started.
    """
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "options": options,
        "machine": host,
        "benchmarks": {result.name: result.to_json() for result in results},
    }
    text = json.dumps(document, indent=2) + "\n"
    path = directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path
