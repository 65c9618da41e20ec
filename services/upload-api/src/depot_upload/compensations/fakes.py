"""In-memory fake of the compensation worker's records (:class:`.ports.CompensationRecords`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from depot_upload.compensations.ports import UploadState
from depot_upload.domain import Status, StoredBlob

if TYPE_CHECKING:
    from depot_upload.fakes import Tables


@dataclass(frozen=True)
class QuarantineRow:
    """A row of ``upload.quarantine``."""

    object_key: str
    size_bytes: int
    run_id: uuid.UUID
    purge_after: datetime
    purged_at: datetime | None = None


class FakeCompensationRecords:
    def __init__(self, tables: Tables, now: Callable[[], datetime]) -> None:
        self._tables = tables
        self._now = now

    async def live_document_owns(self, key: str) -> bool:
        return any(
            d.object_key == key and d.status in (Status.PENDING, Status.STORED) for d in self._tables.documents.values()
        )

    async def record_quarantine(
        self, *, key: str, quarantined: str, size_bytes: int, retention_s: int, run_id: uuid.UUID
    ) -> None:
        self._tables.quarantine[quarantined] = QuarantineRow(
            object_key=key,
            size_bytes=size_bytes,
            run_id=run_id,
            purge_after=self._now() + timedelta(seconds=retention_s),
        )

    async def upload_state(self, document_id: uuid.UUID, *, upload_ttl: int) -> UploadState | None:
        document = self._tables.documents.get(document_id)
        if document is None:
            return None
        session = self._tables.sessions.get(document_id)
        now = self._now()
        if session is None:
            expired = document.created_at + timedelta(seconds=upload_ttl) <= now
        else:
            expired = session.expires_at <= now
        return UploadState(
            status=str(document.status),
            object_key=document.object_key,
            expired=expired,
            declared=StoredBlob(session.size_bytes, session.sha256) if session else None,
            multipart_upload_id=session.multipart_upload_id if session else None,
        )

    async def mark_purged(self, quarantined: str) -> None:
        row = self._tables.quarantine.get(quarantined)
        if row is not None and row.purged_at is None:
            self._tables.quarantine[quarantined] = replace(row, purged_at=self._now())

    async def multipart_claimed(self, key: str, multipart_upload_id: str, *, upload_ttl: int) -> bool:
        cutoff = self._now() - timedelta(seconds=upload_ttl)
        return any(
            s.multipart_upload_id == multipart_upload_id and s.status == "pending"
            for s in self._tables.sessions.values()
        ) or any(
            d.object_key == key and d.status is Status.PENDING and d.created_at > cutoff
            for d in self._tables.documents.values()
        )
