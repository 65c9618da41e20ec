"""The adapters documents need, as small Protocols (the unit of work is in :mod:`depot_upload.unit_of_work`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from depot_common.errors import Conflict
from depot_upload.domain import Document, OwnerStatus, PageCursor, StoredBlob, Transition


class BlobStore(Protocol):
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, content_type: str
    ) -> StoredBlob:
        """Write ``chunks`` under ``key`` unless it exists; hash while streaming.

        Raises ``PayloadTooLarge`` (after removing what was written) past ``max_bytes``.
        """

    async def delete(self, key: str) -> None: ...

    async def open(self, key: str) -> AsyncGenerator[bytes, None]:
        """The object's bytes as a stream (close it when done); ``Unavailable`` when it cannot be read."""

    async def presign_get(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str: ...


class DocumentRepository(Protocol):
    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document: ...

    async def lock(self, document_id: uuid.UUID) -> Document | None:
        """The document, locked until the unit of work ends (``None`` if absent)."""

    async def save(self, document: Document) -> Document:
        """Write a transition's document (its version follows the locked one); the document as saved.

        Raises ``Duplicate`` (with ``existing_id``) when the owner already stored this content.
        """

    async def apply_alone(self, transition: Transition[Any]) -> Document | None:
        """Save the transition's document and add its outbox event, committed together on their own (outside
        any unit of work); the document as saved, ``None`` when the row is no longer the version the
        transition started from.

        Raises ``Duplicate`` (with ``existing_id``) when the owner already stored this content.
        """

    async def record_idempotency(self, owner_id: str, key: str, sha256: str, document: Document) -> None:
        """Remember the response of this key; ``IdempotencyKeyTaken`` when another request recorded it first."""

    async def discard_pending(self, document_id: uuid.UUID) -> None:
        """Remove a ``pending`` row whose upload was refused (never acknowledged)."""

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None: ...

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None: ...

    async def list_page(self, owner_id: str, *, limit: int, after: PageCursor | None) -> list[Document]:
        """Up to ``limit`` live documents, newest first, strictly after ``after``."""

    async def owner_status(self, owner_id: str) -> OwnerStatus: ...

    async def find_idempotent(self, owner_id: str, key: str) -> tuple[str, Document] | None:
        """The ``(sha256, document as first returned)`` recorded for this key, if any."""


class IdempotencyKeyTaken(Conflict):
    """Another request recorded the same Idempotency-Key first (retrying replays that request's answer)."""

    code = "idempotency_key_taken"
    retriable = True
