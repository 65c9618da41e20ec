"""``depot-reconciler``: the operator's command line (docs/reconciler.md).

``run`` is a dry run unless ``--apply``: it scans (reading stored bytes back only with
``--verify-content`` or ``--verify-sample FRACTION``), persists the plan, prints a summary
(a table by class, or ``--json``) and exits 0 when consistent, 1 when findings exist,
2 on error (bad settings, unreachable database or bucket, another run in progress).
``serve`` runs the ops HTTP API and the scheduled runs; ``relay`` publishes the
compensations ``--apply`` wrote to ``reconcile.outbox``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from depot_common.logging import configure_logging
from depot_common.settings import load_settings
from depot_reconciler import repository
from depot_reconciler.apply import ApplyResult, apply_plan
from depot_reconciler.bootstrap import run_relay, run_resources
from depot_reconciler.checks import CHECKS
from depot_reconciler.plan import PlanResult, make_plan, run_lock
from depot_reconciler.scan import ScanProgress
from depot_reconciler.settings import ReconcilerSettings

log = structlog.get_logger(__name__)

EXIT_CONSISTENT, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def share(text: str) -> float:
    """A share in (0, 1], as ``--verify-sample`` takes it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a share is in (0, 1], not {text}")
    return value


def verify_sample(args: argparse.Namespace) -> float | None:
    """The share of stored documents a run reads back: 1 with ``--verify-content``, else ``--verify-sample``."""
    sample: float | None = 1.0 if args.verify_content else args.verify_sample
    return sample


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
    verify = run.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-content",
        action="store_true",
        help="also read back every stored document and check its SHA-256 (content_mismatch)",
    )
    verify.add_argument(
        "--verify-sample",
        type=share,
        metavar="FRACTION",
        help="also read back this random share (0 < FRACTION <= 1) of the stored documents",
    )
    commands.add_parser(
        "serve",
        help="the ops HTTP API on DEPOT_HTTP_HOST:DEPOT_HTTP_PORT, and a run every DEPOT_RECONCILE_INTERVAL",
        description="POST /v1/reconcile, POST /v1/reconcile/runs/{id}/apply, GET /v1/reconcile/runs[/{id}] (admin).",
    )
    commands.add_parser(
        "relay",
        help="publish the reconcile outbox (compensations) to Kafka until SIGINT/SIGTERM",
        description="One active relay per database; ops endpoints on DEPOT_OPS_PORT when set.",
    )
    return parser


def _describe(progress: ScanProgress) -> str:
    text = (
        f"reconciling: {progress.objects} objects, {progress.documents} documents, "
        f"{progress.index_rows} index rows, {progress.outbox_rows} outbox rows"
    )
    if progress.verified_documents:
        text += f", {progress.verified_documents} documents read back ({progress.verified_bytes} bytes)"
    return text


@contextmanager
def _progress_display(enabled: bool) -> Iterator[Callable[[ScanProgress], None] | None]:
    """A live progress line on stderr when it is a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as display:
        task = display.add_task("reconciling", total=None)
        yield lambda progress: display.update(task, description=_describe(progress))


async def _reconcile(args: argparse.Namespace, settings: ReconcilerSettings, out: TextIO) -> int:
    async with run_resources(settings) as (pool, s3), run_lock(pool) as conn:
        with _progress_display(sys.stderr.isatty()) as on_progress:
            plan = await make_plan(
                conn,
                pool,
                s3,
                settings,
                checks=args.check,
                apply=args.apply,
                verify_sample=verify_sample(args),
                on_progress=on_progress,
            )
        applied: ApplyResult | None = None
        if args.apply and plan.total:
            applied = await apply_plan(
                conn,
                s3,
                bucket=settings.s3_bucket,
                run_id=plan.run_id,
                max_fraction=settings.reconcile_max_fraction,
                force=args.force,
                page_size=settings.page_size,
            )
        if args.json:
            await _write_json(conn, plan, applied, out)
        else:
            _write_table(plan, applied, out)
    return EXIT_FINDINGS if plan.total else EXIT_CONSISTENT


def _write_table(plan: PlanResult, applied: ApplyResult | None, out: TextIO) -> None:
    console = Console(file=out, highlight=False)
    table = Table(title=f"run {plan.run_id}\n({'applied' if applied else 'dry run'})")
    table.add_column("check")
    table.add_column("findings", justify="right")
    if applied:
        table.add_column("emitted", justify="right")
        table.add_column("skipped", justify="right")
    for check in plan.checks:
        extra = [str(applied.emitted.get(check, 0)), str(applied.skipped.get(check, 0))] if applied else []
        table.add_row(check, str(plan.findings[check]), *extra)
    extra = [str(sum(applied.emitted.values())), str(sum(applied.skipped.values()))] if applied else []
    table.add_row("total", str(plan.total), *extra, end_section=True)
    console.print(table)
    scanned = plan.scanned
    console.print(f"scanned {scanned['objects']} objects and {scanned['documents']} documents")
    if plan.verify_sample is not None:
        console.print(
            f"read back {scanned['verified_documents']} stored documents ({scanned['verified_bytes']} bytes),"
            f" a {plan.verify_sample:.0%} sample"
        )
    if plan.total == 0:
        console.print("consistent")
    elif applied:
        console.print("compensations emitted: the owners repair the findings; run again to confirm")
    else:
        console.print("findings exist: review the plan, then apply it with --apply")
        console.print(f"  (or POST /v1/reconcile/runs/{plan.run_id}/apply on the reconciler's HTTP API)")


async def _write_json(conn: Any, plan: PlanResult, applied: ApplyResult | None, out: TextIO) -> None:
    """The run and every finding as one JSON object, findings read back page by page."""
    head: dict[str, Any] = {
        "run_id": str(plan.run_id),
        "status": "applied" if applied else "planned",
        "apply": applied is not None,
        "checks": list(plan.checks),
        "counts": plan.findings,
        "total": plan.total,
        "scanned": plan.scanned,
        "verify_sample": plan.verify_sample,
    }
    if applied:
        head["applied"] = {"emitted": applied.emitted, "skipped": applied.skipped, "reported": applied.reported}
    out.write(json.dumps(head)[:-1] + ', "findings": [')
    after, first = 0, True
    while page := await repository.findings_page(conn, plan.run_id, after=after):
        for finding in page:
            item = {
                "id": finding.id,
                "check": finding.check,
                "subject": finding.subject,
                "details": finding.details,
                "action": finding.action,
                "outcome": finding.outcome,
            }
            out.write(("" if first else ", ") + json.dumps(item))
            first = False
        after = page[-1].id
    out.write("]}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(ReconcilerSettings)
    except SystemExit as stop:  # load_settings already wrote the one line naming the setting
        return int(stop.code) if isinstance(stop.code, int) else EXIT_ERROR
    configure_logging(settings.log_format, settings.log_level, service=f"reconciler.{args.command}")
    if args.command == "serve":
        from depot_common.entrypoint import serve_http
        from depot_reconciler.bootstrap import build_app

        serve_http(build_app(settings), host=settings.http_host, port=settings.http_port)
        return EXIT_CONSISTENT
    if args.command == "relay":
        asyncio.run(run_relay(settings))
        return EXIT_CONSISTENT
    try:
        return asyncio.run(_reconcile(args, settings, sys.stdout))
    except Exception as error:
        log.error("reconcile.cli.error", error=repr(error))
        sys.stderr.write(f"depot-reconciler: error: {error}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
