"""``depot-reconciler``: the operator's command line (SPEC §7)."""

from __future__ import annotations

import argparse
import sys

CHECKS = ("orphan_object", "missing_blob", "stale_upload", "unindexed", "ghost_index_entry", "stuck_outbox")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depot-reconciler",
        description="Find inconsistencies between PostgreSQL, S3 and the search index, and repair them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="scan and report findings (dry run unless --apply)",
        description="Exit codes: 0 consistent, 1 findings exist, 2 error.",
    )
    run.add_argument("--apply", action="store_true", help="emit compensations for the findings")
    run.add_argument("--force", action="store_true", help="apply even past DEPOT_RECONCILE_MAX_FRACTION")
    run.add_argument("--check", action="append", choices=CHECKS, metavar="NAME", help="run only these checks")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    sys.stderr.write("depot-reconciler: the reconcile checks are not implemented yet\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
