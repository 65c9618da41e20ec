"""A reconcile run's second half: act on a persisted plan (docs/reconciler.md).

Each finding is re-checked at the moment of acting (the row or object may have changed
since the scan); if it still holds, its compensation event goes into ``reconcile.outbox``
in the same transaction that records the action in the audit trail and on the finding.
The owners execute compensations (upload-api quarantines orphan objects, the indexer
reindexes or removes entries); ``stuck_outbox`` is reported only. A safety stop refuses
a plan that would touch more than ``DEPOT_RECONCILE_MAX_FRACTION`` of the objects or
documents unless forced.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from depot_common.db import Connection
from depot_common.errors import ConfigurationError, Conflict, NotFound
from depot_common.events import COMPENSATIONS_TOPIC, CloudEvent, type_of
from depot_common.outbox import enqueue
from depot_reconciler import repository
from depot_reconciler.checks import ACTING, BY_NAME
from depot_reconciler.checks.base import Recheck, Verdict
from depot_reconciler.repository import SCHEMA, StoredFinding

log = structlog.get_logger(__name__)

SOURCE = "depot/reconciler"


class RunNotFound(NotFound):
    """No run has this id (404)."""


class RunNotPlanned(Conflict):
    """The run is not ``planned`` (409 ``already_applied`` when applying or applied, else ``not_planned``)."""

    def __init__(self, message: str, *, run_status: str) -> None:
        code = "already_applied" if run_status in {"applying", "applied"} else "not_planned"
        super().__init__(message, code=code, status=run_status)
        self.run_status = run_status


class SafetyStop(Conflict):
    """The plan would touch more than the allowed share of the objects or documents (409 ``safety_stop``)."""

    code = "safety_stop"

    def __init__(self, message: str, *, actionable: int = 0, population: int = 0, max_fraction: float = 0.0) -> None:
        super().__init__(message, actionable=actionable, population=population, max_fraction=max_fraction)
        self.actionable = actionable
        self.population = population
        self.max_fraction = max_fraction


@dataclass(frozen=True, slots=True)
class ApplyResult:
    run_id: uuid.UUID
    emitted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    reported: int = 0


async def recheck(conn: Connection, s3: Any, bucket: str, finding: StoredFinding) -> Verdict:
    """The compensation if ``finding`` still holds now, else ``None``; and the reason either way."""
    check = BY_NAME.get(finding.check)
    if check is None or check.recheck is None:
        raise ConfigurationError(f"no compensation for {finding.check}")
    return await check.recheck(Recheck(conn, s3, bucket), finding)


async def stake(conn: Connection, run: repository.Run) -> tuple[int, int]:
    """``(findings to act on, objects or documents at stake)`` of a planned run."""
    actionable: int = await conn.fetchval(
        "SELECT count(*) FROM reconcile.findings WHERE run_id = $1 AND class = ANY($2::text[])",
        run.id,
        list(ACTING),
    )
    documents: int = await conn.fetchval("SELECT count(*) FROM upload.documents")
    objects = int(run.counts.get("scanned", {}).get("objects", 0))
    return actionable, max(objects, documents)


async def preflight(
    conn: Connection, *, run_id: uuid.UUID, max_fraction: float, force: bool = False
) -> tuple[repository.Run, int, int]:
    """The run, the findings to act on and the population, if the run may be applied now.

    Raises ``RunNotFound``, ``RunNotPlanned`` or (unless ``force``) ``SafetyStop``.
    """
    run = await repository.get_run(conn, run_id)
    if run is None:
        raise RunNotFound(f"no reconcile run {run_id}")
    if run.status != "planned":
        raise RunNotPlanned(f"run {run_id} is {run.status}, not planned", run_status=run.status)
    actionable, population = await stake(conn, run)
    if actionable > max_fraction * population:
        reason = (
            f"the plan would act on {actionable} of {population} objects or documents,"
            f" more than DEPOT_RECONCILE_MAX_FRACTION={max_fraction}"
        )
        if not force:
            log.warning("reconcile.apply.safety_stop", run_id=str(run_id), actionable=actionable, population=population)
            raise SafetyStop(
                f"{reason}: review the plan and use --force",
                actionable=actionable,
                population=population,
                max_fraction=max_fraction,
            )
        log.warning("reconcile.apply.forced", run_id=str(run_id), actionable=actionable, population=population)
    return run, actionable, population


async def apply_plan(
    conn: Connection,
    s3: Any,
    *,
    bucket: str,
    run_id: uuid.UUID,
    max_fraction: float,
    force: bool = False,
    page_size: int = 500,
) -> ApplyResult:
    """Act on the findings of planned run ``run_id``; ``conn`` must hold the run lock."""
    run, actionable, population = await preflight(conn, run_id=run_id, max_fraction=max_fraction, force=force)
    await repository.set_status(conn, run_id, "applying")
    return await execute_plan(
        conn, s3, bucket=bucket, run=run, actionable=actionable, population=population, page_size=page_size
    )


async def execute_plan(
    conn: Connection,
    s3: Any,
    *,
    bucket: str,
    run: repository.Run,
    actionable: int,
    population: int,
    page_size: int = 500,
) -> ApplyResult:
    """The acting half of ``apply_plan``: ``run`` passed ``preflight`` and is marked ``applying``."""
    run_id = run.id
    log.info("reconcile.apply.started", run_id=str(run_id))
    emitted: dict[str, int] = {}
    skipped: dict[str, int] = {}
    reported = 0
    after = 0
    while page := await repository.findings_page(conn, run_id, after=after, limit=page_size):
        after = page[-1].id
        for finding in page:
            if finding.outcome is not None:  # already acted on
                continue
            check = BY_NAME.get(finding.check)
            if check is None or check.compensation is None:
                await repository.mark_finding(conn, finding.id, action=None, outcome="reported")
                reported += 1
                continue
            async with conn.transaction():
                compensation, reason = await recheck(conn, s3, bucket, finding)
                if compensation is None:
                    await repository.mark_finding(conn, finding.id, action=None, outcome=f"skipped: {reason}")
                    await repository.audit(conn, finding, action="skip", reason=reason, event_id=None)
                    skipped[finding.check] = skipped.get(finding.check, 0) + 1
                    log.info(
                        "reconcile.apply.skipped",
                        run_id=str(run_id),
                        check=finding.check,
                        subject=finding.subject,
                        reason=reason,
                    )
                    continue
                event_type = type_of(check.compensation)
                event = CloudEvent[Any](source=SOURCE, type=event_type, subject=finding.subject, data=compensation)
                await enqueue(conn, SCHEMA, topic=COMPENSATIONS_TOPIC, key=finding.subject, event=event)
                await repository.mark_finding(conn, finding.id, action=event_type, outcome="emitted")
                await repository.audit(conn, finding, action=event_type, reason=reason, event_id=event.id)
                emitted[finding.check] = emitted.get(finding.check, 0) + 1
                log.info(
                    "reconcile.apply.emitted",
                    run_id=str(run_id),
                    check=finding.check,
                    subject=finding.subject,
                    event_id=str(event.id),
                )
    counts = {**run.counts, "applied": {"emitted": emitted, "skipped": skipped, "reported": reported}}
    await repository.finish_run(conn, run_id, status="applied", counts=counts)
    log.info(
        "reconcile.apply.finished",
        run_id=str(run_id),
        emitted=emitted,
        skipped=skipped,
        actionable=actionable,
        population=population,
    )
    return ApplyResult(run_id=run_id, emitted=emitted, skipped=skipped, reported=reported)
