"""Runs started by the HTTP API and the schedule, in the background, with their metrics.

``Reconciler.start`` takes the run lock (``RunInProgress`` when another replica or request
holds it), creates the run row so its id can be answered at once, and hands the locked
connection to a background task that plans (and applies when asked). ``Reconciler.apply``
does the same for a reviewed plan after ``preflight`` (unknown run, not planned, safety
stop) has passed. ``schedule`` starts a run every interval ± 10 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Collection, Coroutine
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge, Histogram

from depot_common.db import Connection
from depot_reconciler import repository
from depot_reconciler.apply import ApplyResult, SafetyStop, apply_plan, execute_plan, preflight
from depot_reconciler.plan import PlanResult, RunInProgress, make_plan, run_lock, selected_checks
from depot_reconciler.settings import ReconcilerSettings

log = structlog.get_logger(__name__)

FINDINGS = Gauge("depot_reconcile_findings", "Findings of the last run, by class", ["class"])
RUN_DURATION = Histogram(
    "depot_reconcile_run_duration_seconds",
    "Duration of a reconcile run (plan, and apply when asked)",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
OBJECTS_SCANNED = Counter("depot_reconcile_objects_scanned_total", "S3 objects listed by reconcile runs")
COMPENSATIONS = Counter(
    "depot_reconcile_compensations_applied_total", "Compensation events emitted by apply, by class", ["class"]
)
RUNS = Counter(
    "depot_reconcile_runs_total",
    "Reconcile runs by outcome: consistent, findings, applied, safety_stop, failed, skipped (lock held)",
    ["outcome"],
)

#: Scheduled runs start every interval times a factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.1


def jittered(interval: float, rng: random.Random | None = None) -> float:
    """``interval`` ± 10 %, so replicas started together do not wake together."""
    return interval * (rng or random).uniform(1 - JITTER, 1 + JITTER)


class Reconciler:
    """Starts runs on a pool and an S3 client; at most one at a time across replicas."""

    def __init__(self, pool: asyncpg.Pool, s3: Any, settings: ReconcilerSettings) -> None:
        self.pool = pool
        self.s3 = s3
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()

    async def _locked(self) -> tuple[contextlib.AsyncExitStack, Connection]:
        stack = contextlib.AsyncExitStack()
        conn = await stack.enter_async_context(run_lock(self.pool))
        return stack, conn

    def _spawn(self, stack: contextlib.AsyncExitStack, work: Any) -> asyncio.Task[None]:
        async def run() -> None:
            async with stack:
                await work

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(
        self,
        *,
        apply: bool = False,
        checks: Collection[str] | None = None,
        force: bool = False,
        verify_sample: float | None = None,
    ) -> tuple[uuid.UUID, asyncio.Task[None]]:
        """Start a run in the background: its id and task. ``UnknownCheck`` or ``RunInProgress`` when it cannot.

        ``verify_sample``: the share of stored documents whose bytes the run reads back (``content_mismatch``).
        """
        chosen = selected_checks(checks, verify_sample=verify_sample)
        stack, conn = await self._locked()
        try:
            run_id = uuid.uuid4()
            await repository.create_run(conn, run_id=run_id, apply=apply, checks=chosen)
        except BaseException:
            await stack.aclose()
            raise
        work = self._run(conn, run_id, chosen, apply=apply, force=force, verify_sample=verify_sample)
        return run_id, self._spawn(stack, work)

    async def apply(self, run_id: uuid.UUID, *, force: bool = False) -> asyncio.Task[None]:
        """Apply a planned run in the background once ``preflight`` passed (its errors raise here)."""
        stack, conn = await self._locked()
        try:
            run, actionable, population = await preflight(
                conn, run_id=run_id, max_fraction=self.settings.reconcile_max_fraction, force=force
            )
            await repository.set_status(conn, run_id, "applying")  # visible before the 202
        except BaseException:
            await stack.aclose()
            raise
        work = execute_plan(
            conn,
            self.s3,
            bucket=self.settings.s3_bucket,
            run=run,
            actionable=actionable,
            population=population,
            page_size=self.settings.page_size,
        )
        return self._spawn(stack, self._timed(self._applying(conn, run_id, work)))

    async def _timed(self, work: Any) -> None:
        with RUN_DURATION.time():
            await work

    async def _run(
        self,
        conn: Connection,
        run_id: uuid.UUID,
        checks: tuple[str, ...],
        *,
        apply: bool,
        force: bool,
        verify_sample: float | None,
    ) -> None:
        with RUN_DURATION.time():
            try:
                plan = await make_plan(
                    conn,
                    self.pool,
                    self.s3,
                    self.settings,
                    checks=checks,
                    apply=apply,
                    verify_sample=verify_sample,
                    run_id=run_id,
                )
            except Exception as error:  # make_plan marked the run failed
                RUNS.labels("failed").inc()
                log.error("reconcile.run.error", run_id=str(run_id), error=repr(error))
                return
            _record_plan(plan)
            if apply and plan.total:
                await self._apply(conn, run_id, force=force)

    async def _apply(self, conn: Connection, run_id: uuid.UUID, *, force: bool) -> None:
        work = apply_plan(
            conn,
            self.s3,
            bucket=self.settings.s3_bucket,
            run_id=run_id,
            max_fraction=self.settings.reconcile_max_fraction,
            force=force,
            page_size=self.settings.page_size,
        )
        await self._applying(conn, run_id, work)

    async def _applying(self, conn: Connection, run_id: uuid.UUID, work: Coroutine[Any, Any, ApplyResult]) -> None:
        try:
            result = await work
        except SafetyStop as stop:  # the run stays planned, for review
            RUNS.labels("safety_stop").inc()
            log.warning("reconcile.run.safety_stop", run_id=str(run_id), error=str(stop))
            return
        except Exception as error:
            RUNS.labels("failed").inc()
            log.error("reconcile.apply.error", run_id=str(run_id), error=repr(error))
            # Findings already acted on keep their outcome; applying again resumes with the others.
            with contextlib.suppress(Exception):
                await asyncio.shield(repository.set_status(conn, run_id, "planned"))
            return
        _record_apply(result)

    async def scheduled_run(self) -> uuid.UUID | None:
        """One scheduled run, awaited; ``None`` (quietly) when another run holds the lock.

        It verifies the content of ``DEPOT_RECONCILE_SCHEDULE_VERIFY_SAMPLE`` of the stored documents (0: none).
        """
        sample = self.settings.reconcile_schedule_verify_sample or None
        try:
            run_id, task = await self.start(apply=self.settings.reconcile_schedule_apply, verify_sample=sample)
        except RunInProgress:
            RUNS.labels("skipped").inc()
            log.info("reconcile.schedule.skipped", reason="another run is in progress")
            return None
        await task
        return run_id

    async def schedule(self, interval: float, *, rng: random.Random | None = None) -> None:
        """A scheduled run every ``interval`` ± 10 % seconds until cancelled; failures are logged."""
        while True:
            await asyncio.sleep(jittered(interval, rng))
            try:
                await self.scheduled_run()
            except Exception as error:  # the next tick tries again
                log.warning("reconcile.schedule.failed", error=repr(error))

    async def close(self) -> None:
        """Cancel the runs in flight (a cancelled plan is marked failed) and wait for them."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _record_plan(plan: PlanResult) -> None:
    for check, count in plan.findings.items():
        FINDINGS.labels(check).set(count)
    OBJECTS_SCANNED.inc(plan.scanned.get("objects", 0))
    RUNS.labels("findings" if plan.total else "consistent").inc()


def _record_apply(result: ApplyResult) -> None:
    for check, count in result.emitted.items():
        COMPENSATIONS.labels(check).inc(count)
    RUNS.labels("applied").inc()
