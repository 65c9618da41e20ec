"""The adapters the compensation worker needs, as small Protocols, and what they return."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from depot_upload.domain import StoredBlob


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
    """The compensation worker's own rows (quarantine) and the re-check of a stale upload."""

    async def live_document_owns(self, key: str) -> bool:
        """Whether a ``pending`` or ``stored`` document claims ``key`` (its row locked until the unit of work ends)."""

    async def record_quarantine(
        self, *, key: str, quarantined: str, size_bytes: int, retention_s: int, run_id: uuid.UUID
    ) -> None: ...

    async def upload_state(self, document_id: uuid.UUID, *, upload_ttl: int) -> UploadState | None:
        """The document's status, whether it is past its upload TTL, and its declaration."""

    async def mark_purged(self, quarantined: str) -> None: ...

    async def multipart_claimed(self, key: str, multipart_upload_id: str, *, upload_ttl: int) -> bool:
        """Whether a live upload claims this S3 multipart upload: a ``pending`` session recording its id, or a
        ``pending`` document of ``key`` still within its upload TTL (a streamed upload in flight)."""
