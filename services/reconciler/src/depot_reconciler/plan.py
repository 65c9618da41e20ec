"""A reconcile run's first half: scan, and persist the findings as the run's plan.

One run at a time across all replicas: ``run_lock`` holds a PostgreSQL session advisory
lock on a dedicated connection for the whole run, and the run's own writes go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from depot_common.db import Connection, advisory_key
from depot_common.errors import Conflict
from depot_reconciler import repository
from depot_reconciler.checks import BY_NAME, select
from depot_reconciler.checks.base import Finding, Limits, Reads
from depot_reconciler.scan import ScanProgress, scan
from depot_reconciler.settings import ReconcilerSettings
from depot_reconciler.verification import Verification

log = structlog.get_logger(__name__)

RUN_LOCK = advisory_key("reconcile:run")
#: Findings written per INSERT batch while the scan goes on.
FINDINGS_BATCH = 500


class RunInProgress(Conflict):
    """Another reconcile run holds the lock (409; retrying once it finished succeeds)."""

    code = "run_in_progress"
    retriable = True


@dataclass(frozen=True, slots=True)
class PlanResult:
    """A persisted plan: findings per class and what the scan read."""

    run_id: uuid.UUID
    checks: tuple[str, ...]
    findings: dict[str, int]
    scanned: dict[str, int] = field(default_factory=dict)
    #: The share of stored documents read back (``None``: no content verified).
    verify_sample: float | None = None

    @property
    def total(self) -> int:
        return sum(self.findings.values())


def limits_for(settings: ReconcilerSettings, now: datetime) -> Limits:
    return Limits(
        now=now,
        grace=timedelta(seconds=settings.reconcile_grace),
        upload_ttl=timedelta(seconds=settings.upload_ttl),
        index_lag=timedelta(seconds=settings.reconcile_index_lag),
        outbox_allowance=timedelta(seconds=settings.reconcile_outbox_allowance),
    )


def selected_checks(requested: Collection[str] | None, *, verify_sample: float | None = None) -> tuple[str, ...]:
    """The names of the checks to run, in canonical order; ``UnknownCheck`` if unknown.

    None named: every check but ``content_mismatch``, which runs when named or when
    ``verify_sample`` (the share of documents to read back) is given.
    """
    return tuple(check.name for check in select(requested, verify=verify_sample is not None))


def verification_for(
    settings: ReconcilerSettings, checks: Collection[str], verify_sample: float | None, run_id: uuid.UUID
) -> Verification | None:
    """What the run reads back: ``verify_sample`` of the stored documents (all of them when a content check is
    named without a sample), paced by the settings, sampled from the run id; ``None`` with no content check."""
    if not any(BY_NAME[name].on_request for name in checks):
        return None
    return Verification(
        sample=1.0 if verify_sample is None else verify_sample,
        bytes_per_s=settings.reconcile_verify_bytes_per_s,
        seed=run_id.int,
    )


@contextlib.asynccontextmanager
async def run_lock(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """A connection holding the reconcile run lock, or ``RunInProgress``."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK):
            raise RunInProgress("another reconcile run is in progress")
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.execute("SELECT pg_advisory_unlock($1)", RUN_LOCK))


async def make_plan(
    conn: Connection,
    pool: asyncpg.Pool,
    s3: Any,
    settings: ReconcilerSettings,
    *,
    checks: Collection[str] | None = None,
    apply: bool = False,
    verify_sample: float | None = None,
    on_progress: Callable[[ScanProgress], None] | None = None,
    run_id: uuid.UUID | None = None,
) -> PlanResult:
    """Scan, persist the run and its findings (status ``planned``), and return the counts.

    ``conn`` (the one holding ``run_lock``) writes the run; ``pool`` serves the scan's reads.
    ``run_id`` names a ``running`` run the caller already created (the HTTP API answers
    with its id before the scan starts); without it the run is created here.
    ``verify_sample`` (0 < share ≤ 1) adds ``content_mismatch`` over that share of the
    stored documents (see :func:`selected_checks`).
    """
    chosen = selected_checks(checks, verify_sample=verify_sample)
    if run_id is None:
        run_id = uuid.uuid4()
        await repository.create_run(conn, run_id=run_id, apply=apply, checks=chosen)
    verification = verification_for(settings, chosen, verify_sample, run_id)
    sample = None if verification is None else verification.sample
    now: datetime = await conn.fetchval("SELECT now()")
    limits = limits_for(settings, now)
    log.info("reconcile.run.started", run_id=str(run_id), checks=list(chosen), apply=apply, verify_sample=sample)
    started = asyncio.get_running_loop().time()
    counts = dict.fromkeys(chosen, 0)
    progress = ScanProgress(on_change=on_progress)
    batch: list[Finding] = []
    try:
        reads = Reads(
            pool=pool, s3=s3, bucket=settings.s3_bucket, page_size=settings.page_size, verification=verification
        )
        findings = scan(select(chosen), reads, limits=limits, progress=progress)
        async for finding in findings:
            counts[finding.check] += 1
            batch.append(finding)
            if len(batch) >= FINDINGS_BATCH:
                await repository.add_findings(conn, run_id, batch)
                batch.clear()
        if batch:
            await repository.add_findings(conn, run_id, batch)
        scanned = progress.counts()
        recorded: dict[str, Any] = {"findings": counts, "scanned": scanned}
        if sample is not None:
            recorded["verify_sample"] = sample
        await repository.finish_run(conn, run_id, status="planned", counts=recorded)
    except BaseException as error:
        with contextlib.suppress(Exception):
            await asyncio.shield(repository.fail_run(conn, run_id, repr(error)))
        log.error("reconcile.run.failed", run_id=str(run_id), error=repr(error))
        raise
    log.info(
        "reconcile.run.planned",
        run_id=str(run_id),
        findings=counts,
        scanned=scanned,
        duration_s=round(asyncio.get_running_loop().time() - started, 3),
    )
    return PlanResult(run_id=run_id, checks=chosen, findings=counts, scanned=scanned, verify_sample=sample)
