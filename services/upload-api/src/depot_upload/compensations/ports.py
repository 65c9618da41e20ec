"""The adapters the compensation worker needs, as small Protocols, and what they return."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from depot_common.db import Connection
from depot_upload.domain import StoredBlob


@dataclass(frozen=True)
class StoredRow:
    """A document row as the ``missing_blob`` re-check sees it (locked)."""

    status: str
    object_key: str
    size_bytes: int | None
    version: int


@dataclass(frozen=True)
class UploadState:
    """A document as the ``stale_upload`` re-check sees it, and what its upload declared.

    ``declared`` is ``None`` for a synchronous upload (no presigned session).
    """

    status: str
    object_key: str
    expired: bool
    declared: StoredBlob | None
    multipart_upload_id: str | None


class ObjectStore(Protocol):
    async def size_of(self, key: str) -> int | None:
        """The object's size, or ``None`` when it does not exist."""

    async def measure(self, key: str) -> StoredBlob | None:
        """Size and SHA-256 read back from the object, or ``None`` when it does not exist."""

    async def copy(self, source: str, target: str) -> bool:
        """Copy ``source`` to ``target``; False when ``source`` does not exist."""

    async def delete(self, key: str) -> None: ...

    async def abort_multipart(self, key: str, multipart_upload_id: str) -> None: ...

    async def keys_older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        """Keys under ``prefix`` last modified before ``cutoff``."""


class CompensationRecords(Protocol):
    async def live_document_owns(self, conn: Connection, key: str) -> bool:
        """Whether a ``pending`` or ``stored`` document claims ``key`` (its row locked for the transaction)."""

    async def lock_document(self, conn: Connection, document_id: uuid.UUID) -> StoredRow | None: ...

    async def fail_lost_blob(self, conn: Connection, document_id: uuid.UUID, version: int) -> bool:
        """``stored`` at ``version`` → ``failed`` plus ``document.failed`` (blob_lost), in ``conn``'s transaction."""

    async def record_quarantine(
        self, conn: Connection, *, key: str, quarantined: str, size_bytes: int, retention_s: int, run_id: uuid.UUID
    ) -> None: ...

    async def upload_state(self, document_id: uuid.UUID) -> UploadState | None:
        """The document's status, whether it is past its upload TTL, and its declaration."""

    async def finalize(self, document_id: uuid.UUID, blob: StoredBlob) -> bool:
        """``pending`` → ``stored`` + ``document.stored`` (committed); False when it is no longer pending
        or the owner stored the same content meanwhile."""

    async def fail_expired(self, document_id: uuid.UUID) -> bool:
        """``pending`` → ``failed`` + ``document.failed`` (upload_expired), committed; False when not pending."""

    async def status(self, document_id: uuid.UUID) -> str | None: ...

    async def mark_purged(self, quarantined: str) -> None: ...
