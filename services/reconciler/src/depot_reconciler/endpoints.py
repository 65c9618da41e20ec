"""The reconciler's HTTP API (docs/reconciler.md): start runs, apply reviewed plans, read runs (admin only)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from depot_common.cursor import CursorCodec, InvalidCursor, timestamp_field, uuid_field
from depot_common.errors import BadRequest
from depot_common.openapi import raises
from depot_common.web import AdminPrincipal
from depot_reconciler import repository
from depot_reconciler.apply import RunNotFound, SafetyStop
from depot_reconciler.checks import UnknownCheck
from depot_reconciler.plan import RunInProgress
from depot_reconciler.runner import Reconciler

router = APIRouter(prefix="/v1/reconcile", tags=["reconcile"])


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apply: bool = False
    checks: list[str] | None = None
    force: bool = False
    verify_content: bool = Field(
        default=False, description="also read back every stored document and check its SHA-256 (content_mismatch)"
    )
    verify_sample: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="also read back this random share of the stored documents (content_mismatch)",
    )

    @model_validator(mode="after")
    def _one_verification(self) -> ReconcileRequest:
        if self.verify_content and self.verify_sample is not None:
            raise ValueError("give verify_content or verify_sample, not both")
        return self

    @property
    def sample(self) -> float | None:
        """The share of stored documents to read back, if any."""
        return 1.0 if self.verify_content else self.verify_sample


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    force: bool = False


def _reconciler(request: Request) -> Reconciler:
    reconciler: Reconciler = request.app.state.reconciler
    return reconciler


#: ``next_cursor`` of the runs list: the ``(started_at, id)`` after the last run of a page.
RUNS_CURSOR = CursorCodec[tuple[datetime, uuid.UUID]](
    dump=lambda at: {"t": at[0].isoformat(), "i": str(at[1])},
    load=lambda fields: (timestamp_field(fields["t"]), uuid_field(fields["i"])),
)


def _run_json(run: repository.Run) -> dict[str, Any]:
    findings: dict[str, int] = run.counts.get("findings", {})
    return {
        "id": str(run.id),
        "status": run.status,
        "apply": run.apply,
        "checks": run.checks,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "counts": findings,
        "total": sum(findings.values()),
        "scanned": run.counts.get("scanned"),
        "verify_sample": run.counts.get("verify_sample"),
        "applied": run.counts.get("applied"),
        "error": run.error,
    }


@router.post(
    "",
    status_code=202,
    responses=raises(RunInProgress, UnknownCheck),
    summary="Start a run (dry run unless apply); it executes in the background.",
)
async def start_run(_: AdminPrincipal, request: Request, body: ReconcileRequest | None = None) -> JSONResponse:
    body = body or ReconcileRequest()
    run_id, _task = await _reconciler(request).start(
        apply=body.apply, checks=body.checks, force=body.force, verify_sample=body.sample
    )
    return JSONResponse({"run_id": str(run_id)}, status_code=202, headers={"Location": f"/v1/reconcile/runs/{run_id}"})


@router.post(
    "/runs/{run_id}/apply",
    status_code=202,
    responses=raises(RunNotFound, RunInProgress, SafetyStop, conflict=["already_applied", "not_planned"]),
    summary="Apply a reviewed plan in the background.",
)
async def apply_run(
    _: AdminPrincipal, request: Request, run_id: uuid.UUID, body: ApplyRequest | None = None
) -> JSONResponse:
    body = body or ApplyRequest()
    await _reconciler(request).apply(run_id, force=body.force)
    return JSONResponse({"run_id": str(run_id), "status": "applying"}, status_code=202)


@router.get(
    "/runs",
    responses=raises(InvalidCursor),
    summary="Runs, newest first (keyset pagination).",
)
async def list_runs(
    _: AdminPrincipal,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    after = RUNS_CURSOR.decode(cursor) if cursor else None
    async with _reconciler(request).pool.acquire() as conn:
        runs = await repository.list_runs(conn, limit=limit + 1, after=after)
    page = runs[:limit]
    return {
        "items": [_run_json(run) for run in page],
        "next_cursor": RUNS_CURSOR.encode((page[-1].started_at, page[-1].id)) if len(runs) > limit else None,
    }


@router.get(
    "/runs/{run_id}",
    responses=raises(InvalidCursor, RunNotFound),
    summary="One run: status, counts per class, and a page of its findings.",
)
async def get_run(
    _: AdminPrincipal,
    request: Request,
    run_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    findings_cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    after = 0
    if findings_cursor:
        if not findings_cursor.isdigit():
            raise BadRequest("findings_cursor is not one this API returned", code="invalid_cursor")
        after = int(findings_cursor)
    async with _reconciler(request).pool.acquire() as conn:
        run = await repository.get_run(conn, run_id)
        if run is None:
            raise RunNotFound(f"no reconcile run {run_id}")
        findings = await repository.findings_page(conn, run_id, after=after, limit=limit + 1)
    page = findings[:limit]
    return {
        **_run_json(run),
        "findings": [
            {
                "id": finding.id,
                "check": finding.check,
                "subject": finding.subject,
                "details": finding.details,
                "action": finding.action,
                "outcome": finding.outcome,
            }
            for finding in page
        ],
        "next_findings_cursor": str(page[-1].id) if len(findings) > limit else None,
    }
