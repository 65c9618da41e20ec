"""A reconcile run's second half: act on a persisted plan (SPEC §7).

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
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from botocore.exceptions import ClientError
from pydantic import BaseModel

from depot_common.db import Connection
from depot_common.events import (
    COMPENSATIONS_TOPIC,
    CloudEvent,
    GhostIndexEntry,
    MissingBlob,
    OrphanObject,
    Reindex,
    StaleUpload,
    type_of,
)
from depot_common.outbox import enqueue
from depot_common.s3 import is_not_found
from depot_reconciler import repository
from depot_reconciler.bootstrap import SCHEMA
from depot_reconciler.checks import (
    GHOST_INDEX_ENTRY,
    LIVE_STATUSES,
    MISSING_BLOB,
    ORPHAN_OBJECT,
    STALE_UPLOAD,
    UNINDEXED,
)
from depot_reconciler.repository import StoredFinding

log = structlog.get_logger(__name__)

SOURCE = "depot/reconciler"
#: The compensation (its data model) emitted for each class; the others are reported only.
COMPENSATION_OF: dict[str, type[BaseModel]] = {
    ORPHAN_OBJECT: OrphanObject,
    MISSING_BLOB: MissingBlob,
    STALE_UPLOAD: StaleUpload,
    UNINDEXED: Reindex,
    GHOST_INDEX_ENTRY: GhostIndexEntry,
}


class ApplyError(RuntimeError):
    """The run cannot be applied (unknown, not planned)."""


class RunNotFound(ApplyError):
    """No run has this id."""


class RunNotPlanned(ApplyError):
    """The run is not ``planned`` (still running, already applied, or failed)."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class SafetyStop(ApplyError):
    """The plan would touch more than the allowed share of the objects or documents."""

    def __init__(self, message: str, *, actionable: int = 0, population: int = 0, max_fraction: float = 0.0) -> None:
        super().__init__(message)
        self.actionable = actionable
        self.population = population
        self.max_fraction = max_fraction


@dataclass(frozen=True, slots=True)
class ApplyResult:
    run_id: uuid.UUID
    emitted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    reported: int = 0


async def _document(conn: Connection, document_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, status, version, size_bytes, updated_at FROM upload.documents WHERE id = $1",
        uuid.UUID(document_id),
    )


def _unchanged(row: asyncpg.Record | None, details: dict[str, Any]) -> bool:
    """The document row is the one the scan saw (same status, version and last change)."""
    return (
        row is not None
        and row["status"] == details["status"]
        and row["version"] == details["version"]
        and row["updated_at"] == datetime.fromisoformat(details["updated_at"])
    )


async def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        head: dict[str, Any] = await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    return head


async def recheck(conn: Connection, s3: Any, bucket: str, finding: StoredFinding) -> tuple[BaseModel | None, str]:
    """The compensation if ``finding`` still holds now, else ``None``; and the reason either way."""
    details, run_id = finding.details, finding.run_id
    if finding.check == ORPHAN_OBJECT:
        head = await _head(s3, bucket, finding.subject)
        if head is None:
            return None, "object gone"
        if str(head.get("ETag", "")).strip('"') != details["etag"] or head["ContentLength"] != details["size_bytes"]:
            return None, "object changed"
        status = await conn.fetchval("SELECT status FROM upload.documents WHERE object_key = $1", finding.subject)
        if status in LIVE_STATUSES:
            return None, f"object now belongs to a {status} document"
        compensation: BaseModel = OrphanObject(
            object_key=finding.subject,
            size_bytes=details["size_bytes"],
            last_modified=datetime.fromisoformat(details["last_modified"]),
            run_id=run_id,
        )
        return compensation, "object belongs to no live document"
    if finding.check == GHOST_INDEX_ENTRY:
        entry = await conn.fetchval(
            "SELECT status FROM search.index_entries WHERE document_id = $1", uuid.UUID(finding.subject)
        )
        if entry != "indexed":
            return None, "index entry no longer indexed"
        row = await _document(conn, finding.subject)
        if row is not None and row["status"] == "stored":
            return None, "document now stored"
        return GhostIndexEntry(document_id=uuid.UUID(finding.subject), run_id=run_id), "document is not stored"
    row = await _document(conn, finding.subject)
    if not _unchanged(row, details):
        return None, "document changed since the scan"
    assert row is not None
    if finding.check == MISSING_BLOB:
        head = await _head(s3, bucket, details["object_key"])
        if head is not None and head["ContentLength"] == row["size_bytes"]:
            return None, "object present with its recorded size"
        reason = (
            "object absent" if head is None else f"object has {head['ContentLength']} bytes, not {row['size_bytes']}"
        )
        return MissingBlob(document_id=row["id"], object_key=details["object_key"], run_id=run_id), reason
    if finding.check == STALE_UPLOAD:
        return StaleUpload(document_id=row["id"], run_id=run_id), "pending past upload TTL plus grace"
    if finding.check == UNINDEXED:
        entry_row = await conn.fetchrow(
            "SELECT status, version FROM search.index_entries WHERE document_id = $1", row["id"]
        )
        if entry_row is not None and entry_row["status"] == "indexed" and entry_row["version"] >= row["version"]:
            return None, "indexed now"
        return Reindex(document_id=row["id"], run_id=run_id), "stored document missing from the index"
    raise ApplyError(f"no compensation for {finding.check}")


async def stake(conn: Connection, run: repository.Run) -> tuple[int, int]:
    """``(findings to act on, objects or documents at stake)`` of a planned run."""
    actionable: int = await conn.fetchval(
        "SELECT count(*) FROM reconcile.findings WHERE run_id = $1 AND class = ANY($2::text[])",
        run.id,
        list(COMPENSATION_OF),
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
        raise RunNotPlanned(f"run {run_id} is {run.status}, not planned", status=run.status)
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
            if finding.check not in COMPENSATION_OF:
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
                event_type = type_of(type(compensation))
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
