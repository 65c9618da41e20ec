"""The ``reconcile`` schema: runs, their findings (the plan), and the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

import asyncpg

from depot_common.db import Connection, Migrations
from depot_common.outbox import outbox_upgrade_ddl
from depot_reconciler.checks.base import Finding

SCHEMA = "reconcile"
MIGRATIONS = Migrations(files("depot_reconciler") / "migrations", {"0003_outbox_json.sql": outbox_upgrade_ddl(SCHEMA)})


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    status: str
    apply: bool
    checks: list[str]
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class StoredFinding:
    id: int
    run_id: uuid.UUID
    check: str
    subject: str
    details: dict[str, Any]
    action: str | None
    outcome: str | None


def _run(row: asyncpg.Record) -> Run:
    return Run(
        id=row["id"],
        status=row["status"],
        apply=row["apply"],
        checks=list(row["checks"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        counts=row["counts"],
        error=row["error"],
    )


def _finding(row: asyncpg.Record) -> StoredFinding:
    return StoredFinding(
        id=row["id"],
        run_id=row["run_id"],
        check=row["class"],
        subject=row["subject"],
        details=row["details"],
        action=row["action"],
        outcome=row["outcome"],
    )


async def create_run(conn: Connection, *, run_id: uuid.UUID, apply: bool, checks: Sequence[str]) -> None:
    await conn.execute(
        "INSERT INTO reconcile.runs (id, status, apply, checks) VALUES ($1, 'running', $2, $3)",
        run_id,
        apply,
        list(checks),
    )


async def add_findings(conn: Connection, run_id: uuid.UUID, findings: Sequence[Finding]) -> None:
    await conn.executemany(
        "INSERT INTO reconcile.findings (run_id, class, subject, details) VALUES ($1, $2, $3, $4)",
        [(run_id, finding.check, finding.subject, finding.details) for finding in findings],
    )


async def finish_run(conn: Connection, run_id: uuid.UUID, *, status: str, counts: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE reconcile.runs SET status = $2, counts = $3, finished_at = clock_timestamp() WHERE id = $1",
        run_id,
        status,
        counts,
    )


async def set_status(conn: Connection, run_id: uuid.UUID, status: str) -> None:
    await conn.execute("UPDATE reconcile.runs SET status = $2 WHERE id = $1", run_id, status)


async def fail_run(conn: Connection, run_id: uuid.UUID, error: str) -> None:
    await conn.execute(
        "UPDATE reconcile.runs SET status = 'failed', error = $2, finished_at = clock_timestamp() WHERE id = $1",
        run_id,
        error,
    )


async def get_run(conn: Connection, run_id: uuid.UUID) -> Run | None:
    row = await conn.fetchrow("SELECT * FROM reconcile.runs WHERE id = $1", run_id)
    return None if row is None else _run(row)


async def findings_page(
    conn: Connection, run_id: uuid.UUID, *, after: int = 0, limit: int = 1000
) -> list[StoredFinding]:
    """One keyset page of a run's findings, in the order they were found."""
    rows = await conn.fetch(
        "SELECT id, run_id, class, subject, details, action, outcome FROM reconcile.findings"
        " WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        run_id,
        after,
        limit,
    )
    return [_finding(row) for row in rows]


async def mark_finding(conn: Connection, finding_id: int, *, action: str | None, outcome: str) -> None:
    await conn.execute(
        "UPDATE reconcile.findings SET action = $2, outcome = $3, applied_at = clock_timestamp() WHERE id = $1",
        finding_id,
        action,
        outcome,
    )


async def audit(
    conn: Connection, finding: StoredFinding, *, action: str, reason: str, event_id: uuid.UUID | None
) -> None:
    """Record one action of a run: what (action, event), why (reason), which run and finding; when is now."""
    await conn.execute(
        "INSERT INTO reconcile.audit (run_id, finding_id, class, subject, action, reason, event_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        finding.run_id,
        finding.id,
        finding.check,
        finding.subject,
        action,
        reason,
        event_id,
    )


async def list_runs(conn: Connection, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None) -> list[Run]:
    """One keyset page of runs, newest first; ``after`` is the last ``(started_at, id)`` seen."""
    if after is None:
        rows = await conn.fetch("SELECT * FROM reconcile.runs ORDER BY started_at DESC, id DESC LIMIT $1", limit)
    else:
        rows = await conn.fetch(
            "SELECT * FROM reconcile.runs WHERE (started_at, id) < ($1, $2) ORDER BY started_at DESC, id DESC LIMIT $3",
            after[0],
            after[1],
            limit,
        )
    return [_run(row) for row in rows]
