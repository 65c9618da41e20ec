"""Routes of ``/v1/uploads``: presigned uploads, where the bytes go straight to S3."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse

from depot_common.errors import BadRequest, Conflict, Duplicate, Gone, NotFound, PayloadTooLarge, Unprocessable
from depot_common.openapi import raises
from depot_common.web import CurrentPrincipal
from depot_upload.documents.schemas import DocumentOut
from depot_upload.presigned.completion import UploadCompletion
from depot_upload.presigned.domain import CompletedPart
from depot_upload.presigned.schemas import CompleteUploadIn, CreateUploadIn, UploadOut, UploadStatusOut
from depot_upload.presigned.service import PresignedUploads

router = APIRouter(prefix="/v1", tags=["uploads"])


async def get_presigned(request: Request) -> PresignedUploads:
    presigned: PresignedUploads = request.app.state.presigned
    return presigned


PresignedDep = Annotated[PresignedUploads, Depends(get_presigned)]


async def get_completion(request: Request) -> UploadCompletion:
    completion: UploadCompletion = request.app.state.completion
    return completion


CompletionDep = Annotated[UploadCompletion, Depends(get_completion)]


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
        **raises(
            BadRequest,
            Duplicate,
            PayloadTooLarge,
            Unprocessable,
            bad_request=["invalid_filename"],
            unprocessable=["invalid_size", "invalid_sha256"],
        ),
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
    responses=raises(NotFound, Gone, gone=["upload_expired", "upload_aborted", "upload_failed"]),
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
    responses=raises(
        NotFound,
        Duplicate,
        Gone,
        Unprocessable,
        conflict=["not_uploaded"],
        gone=["upload_expired", "upload_aborted"],
        unprocessable=["checksum_mismatch"],
    ),
    summary="Finish a presigned upload: verify the bytes and store the document.",
)
async def complete_upload(
    upload_id: str,
    principal: CurrentPrincipal,
    completion: CompletionDep,
    body: Annotated[CompleteUploadIn | None, Body()] = None,
) -> DocumentOut:
    """Checks that the object exists with the declared size and SHA-256, then stores the document.

    409 `not_uploaded` when the bytes are not (all) there yet; 422 `checksum_mismatch`
    (the object is removed); 410 `upload_expired` or `upload_aborted`. Completing a
    completed upload returns its document again.
    """
    parts = [CompletedPart(part.part_number, part.etag) for part in (body.parts if body else [])]
    try:
        document = await completion.complete(owner_id=principal.owner_id, upload_id=_upload_id(upload_id), parts=parts)
    except Duplicate as error:
        raise _locate(error) from None
    return DocumentOut.of(document)


@router.delete(
    "/uploads/{upload_id}",
    status_code=204,
    responses=raises(NotFound, Conflict, conflict=["upload_completed"]),
    summary="Abort a presigned upload.",
)
async def abort_upload(upload_id: str, principal: CurrentPrincipal, completion: CompletionDep) -> Response:
    """Aborts the multipart upload, marks the upload `failed` and removes any uploaded bytes.

    Aborting an aborted upload is a no-op; a completed one is 409 `upload_completed`
    (delete the document instead).
    """
    await completion.abort(owner_id=principal.owner_id, upload_id=_upload_id(upload_id))
    return Response(status_code=204)
