"""Routes of ``/v1/documents`` and ``/v1/status``: translate HTTP into service calls, nothing more."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Send

from depot_common.cursor import CursorCodec, InvalidCursor, timestamp_field, uuid_field
from depot_common.errors import BadRequest, DepotError, Duplicate, NotFound, PayloadTooLarge, Unprocessable
from depot_common.openapi import raises
from depot_common.outages import dependency_unavailable
from depot_common.web import CurrentPrincipal
from depot_upload.api.multipart import MultipartReader, boundary_of
from depot_upload.documents.schemas import BatchItemOut, BatchOut, DocumentOut, DocumentPageOut, StatusOut
from depot_upload.documents.service import MAX_PAGE, ContentMismatch, UploadService
from depot_upload.documents.storage import content_disposition
from depot_upload.domain import PageCursor, UploadResult

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["documents"])


def _multipart_body(field: str, *, many: bool) -> dict[str, Any]:
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [field], "properties": {field: schema}}
                }
            },
        }
    }


async def get_service(request: Request) -> UploadService:
    service: UploadService = request.app.state.service
    return service


ServiceDep = Annotated[UploadService, Depends(get_service)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retrying with the same key and content replays the first response.",
        max_length=255,
    ),
]


def _document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("document not found") from None


def _location(document_id: uuid.UUID | str) -> str:
    return f"/v1/documents/{document_id}"


def _created(result: UploadResult) -> JSONResponse:
    headers = {"Location": _location(result.document.id)}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(DocumentOut.of(result.document).model_dump(mode="json"), status_code=201, headers=headers)


#: ``next_cursor`` of the documents list: the ``(created_at, id)`` after the last document of a page.
PAGE_CURSOR = CursorCodec[PageCursor](
    dump=lambda at: {"t": at.created_at.isoformat(), "i": str(at.id)},
    load=lambda fields: PageCursor(created_at=timestamp_field(fields["t"]), id=uuid_field(fields["i"])),
)


@router.post(
    "/documents",
    status_code=201,
    response_model=DocumentOut,
    responses=raises(
        BadRequest,
        Duplicate,
        PayloadTooLarge,
        Unprocessable,
        bad_request=["invalid_filename", "malformed_multipart"],
        unprocessable=["missing_file", "idempotency_key_reused"],
    ),
    openapi_extra=_multipart_body("file", many=False),
    summary="Upload one file (multipart field `file`), streamed to storage.",
)
async def upload_document(
    request: Request, principal: CurrentPrincipal, service: ServiceDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type")))
    while (part := await reader.next_part()) is not None:
        if part.name != "file" or part.filename is None:
            continue
        try:
            result = await service.upload(
                owner_id=principal.owner_id,
                filename=part.filename,
                content_type=part.content_type,
                chunks=reader.chunks(),
                idempotency_key=idempotency_key,
            )
        except Duplicate as error:
            error.headers["Location"] = _location(error.extra["existing_id"])
            raise
        while await reader.next_part() is not None:
            pass
        return _created(result)
    raise Unprocessable("the multipart body has no 'file' part", code="missing_file")


@router.post(
    "/documents:batch",
    status_code=207,
    response_model=BatchOut,
    responses=raises(BadRequest, Unprocessable, bad_request=["malformed_multipart"], unprocessable=["missing_file"]),
    openapi_extra=_multipart_body("files", many=True),
    summary="Upload many files (multipart fields `files`); each succeeds or fails on its own.",
)
async def upload_batch(request: Request, principal: CurrentPrincipal, service: ServiceDep) -> JSONResponse:
    reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type")))
    limit: int = request.app.state.batch_max_files
    results: list[BatchItemOut] = []
    while True:
        try:
            part = await reader.next_part()
        except BadRequest as error:  # the rest of the body is unreadable; keep what was stored
            if not results:
                raise
            results.append(BatchItemOut(filename=None, status=error.status, error=error.to_dict()))
            break
        if part is None:
            break
        if part.name not in ("files", "file") or part.filename is None:
            continue
        results.append(await _batch_item(service, principal.owner_id, reader, part.filename, part.content_type, limit))
        limit -= 1
    if not results:
        raise Unprocessable("the multipart body has no 'files' part", code="missing_file")
    return JSONResponse(BatchOut.of(results).model_dump(mode="json"), status_code=207)


async def _batch_item(
    service: UploadService, owner_id: str, reader: MultipartReader, filename: str, content_type: str | None, left: int
) -> BatchItemOut:
    try:
        if left <= 0:
            raise BadRequest("this batch has more files than the per-request limit", code="batch_limit_exceeded")
        result = await service.upload(
            owner_id=owner_id, filename=filename, content_type=content_type, chunks=reader.chunks()
        )
    except ClientDisconnect:
        raise
    except Exception as error:  # one file's failure never affects the others
        failure = dependency_unavailable(error) or (error if isinstance(error, DepotError) else None)
        if failure is None:
            log.exception("upload.batch_item_failed", filename=filename)
            return BatchItemOut(
                filename=filename, status=500, error={"error": "internal_error", "message": "internal error"}
            )
        return BatchItemOut(filename=filename, status=failure.status, error=failure.to_dict())
    return BatchItemOut(filename=filename, status=201, document=DocumentOut.of(result.document))


@router.get(
    "/documents",
    response_model=DocumentPageOut,
    responses=raises(InvalidCursor),
    summary="The caller's documents, newest first (keyset pagination).",
)
async def list_documents(
    principal: CurrentPrincipal,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")] = None,
) -> DocumentPageOut:
    page = await service.list_documents(
        owner_id=principal.owner_id, limit=limit, after=PAGE_CURSOR.decode(cursor) if cursor else None
    )
    return DocumentPageOut(
        items=[DocumentOut.of(document) for document in page.items],
        next_cursor=PAGE_CURSOR.encode(page.next_cursor) if page.next_cursor else None,
    )


@router.get(
    "/documents/{document_id}",
    response_model=DocumentOut,
    responses=raises(NotFound),
    summary="One of the caller's documents.",
)
async def get_document(document_id: str, principal: CurrentPrincipal, service: ServiceDep) -> DocumentOut:
    document = await service.get(owner_id=principal.owner_id, document_id=_document_id(document_id))
    return DocumentOut.of(document)


@router.get(
    "/documents/{document_id}/content",
    response_class=StreamingResponse,
    responses={
        **raises(NotFound),
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": (
                "The bytes, with the document's own `Content-Type`. Verified while they stream: bytes that"
                " are not the recorded ones abort the"
                " transfer (fewer bytes than `Content-Length`), never a clean end."
            ),
            "headers": {
                "Repr-Digest": {
                    "description": "RFC 9530: `sha-256=:<base64 of the SHA-256>:` of the whole document",
                    "schema": {"type": "string"},
                },
                "ETag": {"description": "The SHA-256, hex, quoted", "schema": {"type": "string"}},
            },
        },
        307: {"description": "`redirect=true`: a short-lived presigned GET (S3 serves the bytes, unverified)"},
    },
    summary="The document's bytes (streamed), or with `redirect=true` a 307 to a short-lived presigned URL.",
)
async def get_content(
    document_id: str,
    principal: CurrentPrincipal,
    service: ServiceDep,
    redirect: Annotated[bool, Query(description="307 to a presigned S3 URL instead of streaming")] = False,
) -> Response:
    if redirect:
        url = await service.download_url(owner_id=principal.owner_id, document_id=_document_id(document_id))
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    document, stream = await service.open_content(owner_id=principal.owner_id, document_id=_document_id(document_id))
    return VerifiedContentResponse(
        stream,
        media_type=document.content_type,
        headers={
            "Content-Disposition": content_disposition(document.filename),
            "Content-Length": str(document.size_bytes),
            "ETag": f'"{document.sha256}"',
            "Repr-Digest": repr_digest(document.sha256 or ""),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
        },
    )


class VerifiedContentResponse(StreamingResponse):
    """Streams a document's verified bytes; a ``ContentMismatch`` ends it without completing the response.

    The body stops short of ``Content-Length`` and the server closes the connection, so the
    client sees a broken transfer. The mismatch was logged where it was found; returning
    (rather than raising) spares the error path, which would render a traceback first.
    """

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except ContentMismatch:
            return


def repr_digest(sha256: str) -> str:
    """The ``Repr-Digest`` field value (RFC 9530) of a hex SHA-256."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"


@router.delete(
    "/documents/{document_id}",
    status_code=204,
    responses=raises(NotFound),
    summary="Delete a document: it stops being readable and searchable.",
)
async def delete_document(document_id: str, principal: CurrentPrincipal, service: ServiceDep) -> Response:
    await service.delete(owner_id=principal.owner_id, document_id=_document_id(document_id))
    return Response(status_code=204)


@router.get(
    "/status",
    response_model=StatusOut,
    tags=["ops"],
    summary="Outbox backlog and the caller's pending uploads.",
)
async def status(principal: CurrentPrincipal, service: ServiceDep) -> StatusOut:
    current = await service.status(owner_id=principal.owner_id)
    return StatusOut(
        outbox_backlog=current.outbox_backlog,
        oldest_unpublished_age_s=current.oldest_unpublished_age_s,
        pending_uploads=current.pending_uploads,
    )
