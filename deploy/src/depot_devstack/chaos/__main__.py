"""``python -m depot_devstack.chaos`` (``make chaos``): run one soak and print its verdict.

Exit 0 when every invariant of docs/invariants.md held, 1 when one did not (the report names the
evidence), 2 when the run itself could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

from depot_devstack.chaos.faults import FULL, SHORT
from depot_devstack.chaos.run import Settings, soak, write_report
from depot_devstack.servers import StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make chaos",
        description="Depot's fault-injection soak: uploads under SIGKILLs, S3 and broker pauses and a "
        "PostgreSQL crash, then recovery, one reconcile apply, and the invariants of docs/invariants.md counted.",
    )
    parser.add_argument("--seed", type=int, default=None, help="fault schedule and workload seed (default: time)")
    parser.add_argument("--short", action="store_true", help="a run of about 90 s (as in make test)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default 6 short, 8 full)")
    parser.add_argument("--state-dir", type=Path, default=None, help="logs and report (default: a temp dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    state_dir = (args.state_dir or Path(tempfile.mkdtemp(prefix="depot-chaos-"))).resolve()
    profile = SHORT if args.short else FULL
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    settings = Settings(
        profile=profile,
        seed=seed,
        clients=args.clients or (6 if args.short else 8),
        state_dir=state_dir,
        upload_ttl=12 if args.short else 30,
        settle_s=20 if args.short else 60,
    )
    sys.stderr.write(f"chaos: seed {seed}, {profile.workload_s:.0f} s of workload, logs in {state_dir}/logs\n")
    try:
        report = asyncio.run(soak(settings))
    except (StackError, TimeoutError) as error:
        sys.stderr.write(f"chaos: the run could not be carried out: {error}\n")
        return 2
    write_report(report, state_dir / "report.json")
    for fault in report.faults:
        sys.stderr.write(f"  {fault}\n")
    sys.stderr.write(f"  timings {json.dumps(report.timings)}\n")
    sys.stderr.write(f"  operations {json.dumps(report.operations)}\n")
    sys.stderr.write(f"  acknowledged → searchable {json.dumps(report.searchable)}\n")
    sys.stderr.write(f"  restarts after kills {json.dumps(report.kills)}\n")
    sys.stderr.write(f"  exits at start-up (a dependency down), restarted {json.dumps(report.startup_exits)}\n")
    for name, items in report.verdict.evidence.items():
        for item in items:
            sys.stderr.write(f"  {name}: {item}\n")
    sys.stdout.write(("PASS " if report.verdict.ok else "FAIL ") + report.verdict.line() + "\n")
    sys.stderr.write(f"chaos: report {state_dir / 'report.json'}\n")
    return 0 if report.verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
