"""Presigned uploads in the domain: sessions, their states, and the rules on what a client declares.

Imports nothing outward (no FastAPI, asyncpg or boto).
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from depot_common.errors import Gone, PayloadTooLarge, Unprocessable
from depot_upload.domain import Status, StoredBlob, object_key

#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
#: Document states of an upload that completed (and may since have been deleted).
COMPLETED = frozenset({Status.STORED, Status.DELETED})


class SessionStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class FailureReason(enum.StrEnum):
    ABORTED = "aborted"
    EXPIRED = "expired"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class UploadSession:
    """A presigned upload as stored, with its document's status and the time it has left."""

    id: uuid.UUID
    owner_id: str
    size_bytes: int
    sha256: str
    part_size: int
    multipart_upload_id: str | None
    status: SessionStatus
    failure_reason: str | None
    expires_at: datetime
    seconds_left: float
    document_status: Status

    @property
    def object_key(self) -> str:
        return object_key(self.id)

    @property
    def part_count(self) -> int:
        return parts_needed(self.size_bytes, self.part_size)

    @property
    def multipart(self) -> bool:
        """Above one part the bytes go through an S3 multipart upload (its id recorded once created)."""
        return self.part_count > 1

    @property
    def expired(self) -> bool:
        return self.seconds_left <= 0

    def part_bytes(self, part_number: int) -> int:
        """How many bytes part ``part_number`` holds: ``part_size``, the last one the rest."""
        return min(self.part_size, self.size_bytes - (part_number - 1) * self.part_size)


@dataclass(frozen=True)
class PartUrl:
    """A presigned ``PUT`` of one part and the headers signed into it (the client must send them)."""

    part_number: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedPart:
    """A part S3 holds for an upload in progress (the whole object, for a single-part upload)."""

    part_number: int
    etag: str
    size: int


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str


@dataclass(frozen=True)
class UploadTicket:
    """What a client needs to send the bytes: the upload and one URL per part."""

    session: UploadSession
    parts: list[PartUrl]
    created: bool
    """False when an existing live upload of the same content was returned."""


@dataclass(frozen=True)
class UploadProgress:
    """Where an upload stands: what S3 holds and where to send the rest."""

    session: UploadSession
    completed: bool
    received: list[ReceivedPart]
    parts: list[PartUrl]
    """Fresh URLs for the parts S3 does not hold yet."""


def parts_needed(size_bytes: int, part_size: int) -> int:
    return max(1, math.ceil(size_bytes / part_size))


def part_size_for(size_bytes: int, part_size: int) -> int:
    """The configured part size, or larger for a file that would need more than S3's 10 000 parts."""
    return max(part_size, math.ceil(size_bytes / MAX_PARTS))


def check_declaration(*, size_bytes: int, sha256: str, max_bytes: int) -> None:
    """Refuse a declared size or SHA-256 that can never complete (``Unprocessable``, ``PayloadTooLarge``)."""
    if size_bytes <= 0:
        raise Unprocessable("size_bytes must be a positive number of bytes", code="invalid_size")
    if size_bytes > max_bytes:
        raise PayloadTooLarge(f"file exceeds the {max_bytes}-byte limit", max_bytes=max_bytes)
    if not SHA256_HEX.match(sha256):
        raise Unprocessable("sha256 must be 64 lowercase hexadecimal digits", code="invalid_sha256")


def matches(session: UploadSession, blob: StoredBlob) -> bool:
    """Whether the measured object is exactly what the upload declared."""
    return blob.size_bytes == session.size_bytes and blob.sha256 == session.sha256


def checksum_mismatch(session: UploadSession, blob: StoredBlob) -> Unprocessable:
    """The 422 for bytes that are not the declared ones."""
    return Unprocessable(
        "the uploaded bytes do not match the declared size and SHA-256; start a new upload",
        code="checksum_mismatch",
        expected_size=session.size_bytes,
        actual_size=blob.size_bytes,
        expected_sha256=session.sha256,
        actual_sha256=blob.sha256 or None,
    )


def checked_parts(parts: Sequence[CompletedPart], part_count: int) -> list[CompletedPart]:
    """The client's parts in S3's order, or ``Unprocessable`` when they cannot be right."""
    if not parts:
        raise Unprocessable(
            f"this is a multipart upload: list its {part_count} parts with their ETags", code="parts_required"
        )
    numbers = [part.part_number for part in parts]
    if len(set(numbers)) != len(numbers) or not all(1 <= number <= part_count for number in numbers):
        raise Unprocessable(f"part numbers must be distinct and between 1 and {part_count}", code="invalid_parts")
    if not all(part.etag.strip() for part in parts):
        raise Unprocessable("every part needs the ETag S3 returned for it", code="invalid_parts")
    return sorted(parts, key=lambda part: part.part_number)


def gone(session: UploadSession, reason: str | None = None) -> Gone:
    """The 410 for an upload that can never complete, named after why."""
    reason = reason or session.failure_reason or (FailureReason.EXPIRED if session.expired else FailureReason.ABORTED)
    if reason == FailureReason.EXPIRED:
        return Gone("the upload expired before it completed; start a new upload", code="upload_expired")
    if reason == FailureReason.ABORTED:
        return Gone("the upload was aborted; start a new upload", code="upload_aborted")
    return Gone("the upload failed; start a new upload", code="upload_failed", reason=reason)
