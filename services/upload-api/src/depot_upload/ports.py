"""The adapters the upload service needs, as small Protocols."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from depot_upload.domain import Document, StoredBlob


class BlobStore(Protocol):
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, content_type: str
    ) -> StoredBlob:
        """Write ``chunks`` under ``key`` unless it exists; hash while streaming.

        Raises ``PayloadTooLarge`` (after removing what was written) past ``max_bytes``.
        """

    async def delete(self, key: str) -> None: ...


class DocumentRepository(Protocol):
    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document: ...

    async def mark_stored(self, document_id: uuid.UUID, blob: StoredBlob) -> Document:
        """``pending`` → ``stored`` and a ``document.stored`` outbox event, atomically.

        Raises ``Duplicate`` when the owner already has this content stored.
        """

    async def discard_pending(self, document_id: uuid.UUID) -> None:
        """Remove a ``pending`` row whose upload was refused (never acknowledged)."""

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None: ...

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None: ...
