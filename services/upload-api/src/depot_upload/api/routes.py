"""Routes of ``/v1/documents``: translate HTTP into service calls, nothing more."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from depot_common.errors import Duplicate, NotFound, Unprocessable
from depot_common.web import CurrentPrincipal
from depot_upload.api.multipart import MultipartReader, boundary_of
from depot_upload.api.schemas import DocumentOut, ErrorOut
from depot_upload.service import UploadService

router = APIRouter(prefix="/v1", tags=["documents"])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422)}
_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def get_service(request: Request) -> UploadService:
    service: UploadService = request.app.state.service
    return service


ServiceDep = Annotated[UploadService, Depends(get_service)]


def _document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("document not found") from None


@router.post(
    "/documents",
    status_code=201,
    response_model=DocumentOut,
    responses=_ERRORS,
    openapi_extra=_MULTIPART_BODY,
    summary="Upload one file (multipart field `file`), streamed to storage.",
)
async def upload_document(request: Request, principal: CurrentPrincipal, service: ServiceDep) -> JSONResponse:
    reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type")))
    while (part := await reader.next_part()) is not None:
        if part.name != "file" or part.filename is None:
            continue
        try:
            document = await service.upload(
                owner_id=principal.owner_id,
                filename=part.filename,
                content_type=part.content_type,
                chunks=reader.chunks(),
            )
        except Duplicate as error:
            error.headers["Location"] = f"/v1/documents/{error.extra['existing_id']}"
            raise
        while await reader.next_part() is not None:
            pass
        return JSONResponse(
            DocumentOut.of(document).model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"/v1/documents/{document.id}"},
        )
    raise Unprocessable("the multipart body has no 'file' part", code="missing_file")


@router.get(
    "/documents/{document_id}",
    response_model=DocumentOut,
    responses=_ERRORS,
    summary="One of the caller's documents.",
)
async def get_document(document_id: str, principal: CurrentPrincipal, service: ServiceDep) -> DocumentOut:
    document = await service.get(owner_id=principal.owner_id, document_id=_document_id(document_id))
    return DocumentOut.of(document)
