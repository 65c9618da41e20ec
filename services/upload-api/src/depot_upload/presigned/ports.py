"""The adapters presigned uploads need, as small Protocols."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from depot_upload.domain import Document, StoredBlob
from depot_upload.presigned.domain import CompletedPart, FailureReason, PartUrl, ReceivedPart, UploadSession


class UploadSessions(Protocol):
    """Upload sessions (PostgreSQL); the pending document of each is in the document repository."""

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        """The owner's unexpired, pending upload of this content, if any."""

    async def lock_content(self, owner_id: str, sha256: str) -> None:
        """Serialise starts of the same content by the same owner until the unit of work ends."""

    async def insert(
        self,
        *,
        document_id: uuid.UUID,
        owner_id: str,
        size_bytes: int,
        sha256: str,
        part_size: int,
        ttl_seconds: int,
    ) -> UploadSession:
        """The session of a pending document inserted in the same unit of work (no multipart upload yet)."""

    async def record_multipart(self, upload_id: uuid.UUID, multipart_upload_id: str) -> bool:
        """Record the S3 multipart upload of a pending session that has none yet; False when it has
        one already or is no longer pending (nothing changed)."""

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        """The owner's session (another owner's is ``None``)."""

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> None:
        """Record why the session's upload failed (its document's ``fail`` is the caller's)."""

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        """Record that the session's document was stored."""


class PresignStore(Protocol):
    """The S3 side of presigned uploads."""

    async def presign_put(self, key: str, *, sha256: str, expires_in: int) -> PartUrl:
        """A ``PUT`` that can create exactly these bytes once: signed with ``If-None-Match: *``
        and the SHA-256 (S3 refuses other bytes, and any PUT once the object exists)."""

    async def presign_part(self, key: str, multipart_upload_id: str, part_number: int, *, expires_in: int) -> PartUrl:
        """A ``PUT`` of one part; it dies with the multipart upload (completed or aborted)."""

    async def received_parts(self, key: str, multipart_upload_id: str | None) -> list[ReceivedPart] | None:
        """The parts S3 holds: ListParts of the multipart upload, or the object a single PUT made.

        ``None`` when S3 no longer knows the multipart upload (completed or aborted).
        """

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        """Start an S3 multipart upload; return its id."""

    async def complete_multipart(self, key: str, multipart_upload_id: str, parts: Sequence[CompletedPart]) -> None:
        """Assemble the parts without overwriting an existing object.

        Raises ``Conflict`` (``not_uploaded``) when parts are missing or their ETags are
        wrong; returns quietly when the upload was already completed (a retry).
        """

    async def abort_multipart(self, key: str, multipart_upload_id: str) -> None:
        """Discard the uploaded parts; an unknown upload is not an error."""

    async def size_of(self, key: str) -> int | None:
        """The object's size, or ``None`` when there is no object."""

    async def measure(self, key: str) -> StoredBlob | None:
        """Size and SHA-256 of the object, streamed back from S3 (``None``: no object)."""

    async def delete(self, key: str) -> None:
        """Delete the object; a missing one is not an error."""


class StoredDocuments(Protocol):
    """The reads of the document repository presigned uploads use (``PostgresDocuments``)."""

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None: ...

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None: ...
