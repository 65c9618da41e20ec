"""JSON shapes of ``/v1/uploads``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from depot_upload.presigned.domain import UploadTicket


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
            parts=[PartUrlOut(part_number=part.part_number, url=part.url) for part in ticket.parts],
        )


class CompletedPartIn(BaseModel):
    """A part the client uploaded, with the ``ETag`` S3 answered its ``PUT`` with."""

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1)


class CompleteUploadIn(BaseModel):
    """The uploaded parts; omit them (or the whole body) for a single-part upload."""

    parts: list[CompletedPartIn] = Field(default_factory=list, max_length=10_000)
