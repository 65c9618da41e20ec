"""Routes of ``/v1/uploads``: presigned uploads, where the bytes go straight to S3."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from depot_common.errors import Duplicate, NotFound
from depot_common.web import CurrentPrincipal
from depot_upload.api.schemas import DocumentOut, ErrorOut
from depot_upload.presigned import CompletedPart, PresignedUploads, UploadProgress, UploadTicket

router = APIRouter(prefix="/v1", tags=["uploads"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in (401, *codes)}


def get_presigned(request: Request) -> PresignedUploads:
    presigned: PresignedUploads = request.app.state.presigned
    return presigned


PresignedDep = Annotated[PresignedUploads, Depends(get_presigned)]


class CreateUploadIn(BaseModel):
    """A file the client is about to upload straight to storage."""

    filename: str = Field(description="The file's name; no path separators, '..' or control characters.")
    size_bytes: int = Field(description="Exact size in bytes; at most the server's upload limit.")
    sha256: str = Field(description="SHA-256 of the whole file, 64 lowercase hex digits.", examples=["e3b0c442" * 8])
    content_type: str | None = Field(default=None, description="Media type; guessed from the filename when omitted.")


class PartUrlOut(BaseModel):
    """Where to ``PUT`` one part of the file (byte range ``(part_number - 1) * part_size`` onwards)."""

    part_number: int
    url: str = Field(description="Presigned URL: `PUT` the part's bytes to it; keep the `ETag` response header.")
    headers: dict[str, str] = Field(
        description=(
            "Request headers to send with the `PUT`, exactly as given: they are signed into the URL"
            " (a single-part upload: `If-None-Match: *` and `x-amz-checksum-sha256`), so S3 refuses"
            " the request without them, bytes other than the declared ones, and any PUT once the object exists."
        ),
        examples=[{"If-None-Match": "*", "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}],
    )


class UploadOut(BaseModel):
    """An upload in progress: one presigned URL per part, valid until ``expires_at``."""

    upload_id: uuid.UUID = Field(description="Also the id of the document the upload becomes.")
    expires_at: datetime
    part_size: int = Field(description="Bytes per part; the last part holds the remainder.")
    parts: list[PartUrlOut]

    @classmethod
    def of(cls, ticket: UploadTicket) -> UploadOut:
        return cls(
            upload_id=ticket.session.id,
            expires_at=ticket.session.expires_at,
            part_size=ticket.session.part_size,
            parts=[PartUrlOut(part_number=p.part_number, url=p.url, headers=p.headers) for p in ticket.parts],
        )


class ReceivedPartOut(BaseModel):
    """A part S3 already holds: list it, with this ``etag``, when you complete the upload."""

    part_number: int
    etag: str
    size: int


class UploadStatusOut(BaseModel):
    """Where an upload stands, for a client that carries it on (from any device)."""

    upload_id: uuid.UUID
    status: Literal["pending", "completed"] = Field(
        description="`completed`: the bytes are the document's (`GET /v1/documents/{upload_id}`); nothing to send."
    )
    expires_at: datetime
    part_size: int = Field(description="Bytes per part; the last part holds the remainder.")
    parts_received: list[ReceivedPartOut] = Field(description="The parts S3 holds; do not send them again.")
    parts: list[PartUrlOut] = Field(description="Fresh URLs for the parts not received yet, valid until `expires_at`.")

    @classmethod
    def of(cls, progress: UploadProgress) -> UploadStatusOut:
        session = progress.session
        return cls(
            upload_id=session.id,
            status="completed" if progress.completed else "pending",
            expires_at=session.expires_at,
            part_size=session.part_size,
            parts_received=[
                ReceivedPartOut(part_number=part.part_number, etag=part.etag, size=part.size)
                for part in progress.received
            ],
            parts=[PartUrlOut(part_number=p.part_number, url=p.url, headers=p.headers) for p in progress.parts],
        )


class CompletedPartIn(BaseModel):
    """A part the client uploaded, with the ``ETag`` S3 answered its ``PUT`` with."""

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1)


class CompleteUploadIn(BaseModel):
    """The uploaded parts; omit them (or the whole body) for a single-part upload."""

    parts: list[CompletedPartIn] = Field(default_factory=list, max_length=10_000)


def _upload_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("upload not found") from None


def _locate(error: Duplicate) -> Duplicate:
    if error.extra.get("existing_id"):
        error.headers["Location"] = f"/v1/documents/{error.extra['existing_id']}"
    return error


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadOut,
    responses={
        200: {"model": UploadOut, "description": "A live upload of the same content: same `upload_id`, fresh URLs."},
        **_errors(400, 409, 413, 422),
    },
    summary="Start a presigned upload: the bytes go straight to storage.",
)
async def create_upload(body: CreateUploadIn, principal: CurrentPrincipal, presigned: PresignedDep) -> JSONResponse:
    """One presigned `PUT` URL up to the part size, an S3 multipart upload with one URL per part above it.

    The owner's live upload of the same SHA-256 is returned again (200); content the owner
    already stored is 409 `duplicate` with `existing_id` and a `Location` header.
    """
    try:
        ticket = await presigned.start(
            owner_id=principal.owner_id,
            filename=body.filename,
            size_bytes=body.size_bytes,
            sha256=body.sha256,
            content_type=body.content_type,
        )
    except Duplicate as error:
        raise _locate(error) from None
    return JSONResponse(UploadOut.of(ticket).model_dump(mode="json"), status_code=201 if ticket.created else 200)


@router.get(
    "/uploads/{upload_id}",
    response_model=UploadStatusOut,
    responses=_errors(404, 410, 503),
    summary="Resume a presigned upload: the parts storage holds and fresh URLs for the rest.",
)
async def get_upload(upload_id: str, principal: CurrentPrincipal, presigned: PresignedDep) -> UploadStatusOut:
    """Lists the parts S3 already holds (`parts_received`) and gives fresh URLs only for the others.

    Any client of the owner can carry on an interrupted upload with it, then complete it with
    every part's ETag. 404 for an unknown upload or another owner's; 410 `upload_expired`,
    `upload_aborted` or `upload_failed` for one that can never complete.
    """
    return UploadStatusOut.of(await presigned.resume(owner_id=principal.owner_id, upload_id=_upload_id(upload_id)))


@router.post(
    "/uploads/{upload_id}/complete",
    response_model=DocumentOut,
    responses=_errors(404, 409, 410, 422),
    summary="Finish a presigned upload: verify the bytes and store the document.",
)
async def complete_upload(
    upload_id: str,
    principal: CurrentPrincipal,
    presigned: PresignedDep,
    body: Annotated[CompleteUploadIn | None, Body()] = None,
) -> DocumentOut:
    """Checks that the object exists with the declared size and SHA-256, then stores the document.

    409 `not_uploaded` when the bytes are not (all) there yet; 422 `checksum_mismatch`
    (the object is removed); 410 `upload_expired` or `upload_aborted`. Completing a
    completed upload returns its document again.
    """
    parts = [CompletedPart(part.part_number, part.etag) for part in (body.parts if body else [])]
    try:
        document = await presigned.complete(owner_id=principal.owner_id, upload_id=_upload_id(upload_id), parts=parts)
    except Duplicate as error:
        raise _locate(error) from None
    return DocumentOut.of(document)


@router.delete(
    "/uploads/{upload_id}",
    status_code=204,
    responses=_errors(404, 409),
    summary="Abort a presigned upload.",
)
async def abort_upload(upload_id: str, principal: CurrentPrincipal, presigned: PresignedDep) -> Response:
    """Aborts the multipart upload, marks the upload `failed` and removes any uploaded bytes.

    Aborting an aborted upload is a no-op; a completed one is 409 `upload_completed`
    (delete the document instead).
    """
    await presigned.abort(owner_id=principal.owner_id, upload_id=_upload_id(upload_id))
    return Response(status_code=204)
