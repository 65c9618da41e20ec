"""``GET /v1/admin/pipeline``: the pipeline health report, for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from depot_common.openapi import ErrorOut
from depot_common.web import AdminPrincipal
from depot_upload.pipeline.schemas import PipelineOut
from depot_upload.pipeline.service import PipelineHealth

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, invalid or expired bearer token"},
    403: {"model": ErrorOut, "description": "the token has no `admin` role"},
}


@router.get("/pipeline", response_model=PipelineOut, response_model_by_alias=True, responses=_RESPONSES)
async def pipeline(request: Request, principal: AdminPrincipal) -> Any:
    """Pipeline health (admin): every outbox's backlog and oldest unpublished age, each consumer group's
    lag per partition, and each DLQ's message count. A figure that cannot be read is `null`."""
    health: PipelineHealth = request.app.state.pipeline
    report = await health.report()
    return PipelineOut.model_validate(report, from_attributes=True)
