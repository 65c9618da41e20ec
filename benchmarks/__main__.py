"""``python -m benchmarks [--quick] [--only NAME]``: start the servers once, run, report.

Prints a table per benchmark and the targets, and writes the figures to
``bench-results/<UTC timestamp>.json`` and ``bench-results/latest.json``. Every process
it starts (and the database it creates) is gone when it exits, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from rich.console import Console

from benchmarks import indexer, memory, pipeline, reconcile, relay, report, restart, sse, tracing, upload
from benchmarks.report import Check, Result
from benchmarks.stack import Stack, running_stack
from depot_devstack.servers import StackError


class Benchmark(Protocol):
    """A benchmark module's ``run``: measure on the stack, return figures and targets."""

    def __call__(self, stack: Stack, *, quick: bool) -> Coroutine[Any, Any, Result]: ...


BENCHMARKS: dict[str, Benchmark] = {
    upload.NAME: upload.run,
    memory.NAME: memory.run,
    relay.NAME: relay.run,
    indexer.NAME: indexer.run,
    pipeline.NAME: pipeline.run,
    reconcile.NAME: reconcile.run,
    sse.NAME: sse.run,
    tracing.NAME: tracing.run,
    restart.NAME: restart.run,
}
RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench-results"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def _run_all(stack: Stack, names: list[str], quick: bool, console: Console) -> list[Result]:
    results = []
    for name in names:
        started = time.monotonic()
        with console.status(f"benchmark {name}…"):
            try:
                result = asyncio.run(BENCHMARKS[name](stack, quick=quick))
            except Exception as error:  # one broken benchmark must not lose the figures of the others
                console.print_exception()
                result = Result(name)
                result.notes.append(f"FAILED: {error!r}")
                result.checks.append(Check(f"{name} ran to the end", 0.0, 1.0))
        result.figures["duration_s"] = round(time.monotonic() - started, 1)
        console.log(f"{name}: done in {result.figures['duration_s']} s")
        results.append(result)
    return results


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (under a minute)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only NAME (repeatable)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    console = Console()
    if not console.is_terminal:
        console.width = 160
    signal.signal(signal.SIGTERM, _interrupt)
    started_at = datetime.now(UTC)
    host = report.machine()
    if host["busy_cores_before_run"] > 0.2:
        console.print(
            f"[yellow]warning: the machine was already busy ({host['busy_cores_before_run']} cores) before the run;"
            " the figures share its CPUs with that work[/yellow]"
        )
    try:
        with contextlib.ExitStack() as resources:
            with console.status("starting PostgreSQL database, tansu, moto…"):
                stack = resources.enter_context(running_stack())
            resources.callback(_ignore_signals)  # runs first: nothing interrupts the cleanup
            results = _run_all(stack, names, args.quick, console)
    except StackError as error:
        sys.stderr.write(f"benchmarks: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("benchmarks: interrupted; every process started was stopped\n")
        return 130
    report.show(console, results)
    options = {"quick": args.quick, "only": names}
    path = report.write(args.results_dir, results, started=started_at, options=options, host=host)
    console.print(f"figures written to {path} and {args.results_dir / 'latest.json'}")
    if any(note.startswith("FAILED: ") for result in results for note in result.notes):
        return 1  # a benchmark crashed (its traceback is above): the run is not a measurement
    missed = [check for result in results for check in result.checks if not check.passed]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
