"""The adapters presigned uploads need, as small Protocols."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from depot_upload.domain import Document, StoredBlob
from depot_upload.presigned.domain import CompletedPart, FailureReason, UploadSession


class UploadSessions(Protocol):
    """Upload sessions and the pending documents they belong to (PostgreSQL)."""

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        """The owner's unexpired, pending upload of this content, if any."""

    async def create(
        self,
        *,
        document_id: uuid.UUID,
        owner_id: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        sha256: str,
        part_size: int,
        multipart_upload_id: str | None,
        ttl_seconds: int,
    ) -> tuple[UploadSession, bool]:
        """Insert a pending document and its session, atomically.

        Serialised per ``(owner_id, sha256)``: when a live upload of the content already
        exists, return it and ``False`` instead of inserting.
        """

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        """The owner's session (another owner's is ``None``)."""

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> bool:
        """``pending`` → ``failed`` for document and session, with a ``document.failed`` event, in one TX.

        Returns False (and changes nothing) when the document was no longer ``pending``.
        """

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        """Record that the session's document was stored."""


class PresignStore(Protocol):
    """The S3 side of presigned uploads."""

    async def presign_put(self, key: str, *, expires_in: int) -> str: ...

    async def presign_part(self, key: str, multipart_upload_id: str, part_number: int, *, expires_in: int) -> str: ...

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
    """The part of the document repository presigned uploads use (``PostgresDocuments``)."""

    async def mark_stored(self, document_id: uuid.UUID, blob: StoredBlob) -> Document:
        """``pending`` → ``stored`` plus the ``document.stored`` outbox event, atomically.

        Raises ``Duplicate`` when the owner already stored this content, ``Gone`` when
        the document is no longer ``pending``.
        """

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None: ...

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None: ...
