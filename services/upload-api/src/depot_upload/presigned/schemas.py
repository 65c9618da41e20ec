"""JSON shapes of ``/v1/uploads``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from depot_upload.presigned.domain import UploadProgress, UploadTicket


class CreateUploadIn(BaseModel):
    """A file the client is about to upload straight to storage."""

    filename: str = Field(description="The file's name; no path separators, '..' or control characters.")
    # the rules are the API's own (422 `invalid_size`, `invalid_sha256`), documented, not pydantic's 422
    size_bytes: int = Field(
        description="Exact size in bytes; at most the server's upload limit.", json_schema_extra={"minimum": 1}
    )
    sha256: str = Field(
        json_schema_extra={"pattern": "^[0-9a-f]{64}$"},
        description="SHA-256 of the whole file, 64 lowercase hex digits.",
        examples=["e3b0c442" * 8],
    )
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
