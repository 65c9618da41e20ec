"""In-memory fake of the upload sessions (:class:`depot_upload.presigned.ports.UploadSessions`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from depot_upload.domain import Status
from depot_upload.presigned.domain import FailureReason, SessionStatus, UploadSession

if TYPE_CHECKING:
    from depot_upload.fakes import Tables


@dataclass(frozen=True)
class SessionRow:
    """A row of ``upload.upload_sessions``."""

    document_id: uuid.UUID
    owner_id: str
    size_bytes: int
    sha256: str
    part_size: int
    multipart_upload_id: str | None
    expires_at: datetime
    created_at: datetime
    status: SessionStatus = SessionStatus.PENDING
    failure_reason: str | None = None


class FakeUploadSessions:
    def __init__(self, tables: Tables, now: Callable[[], datetime]) -> None:
        self._tables = tables
        self._now = now
        self.content_locks: list[tuple[str, str]] = []

    def _session(self, row: SessionRow) -> UploadSession:
        return UploadSession(
            id=row.document_id,
            owner_id=row.owner_id,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            part_size=row.part_size,
            multipart_upload_id=row.multipart_upload_id,
            status=row.status,
            failure_reason=row.failure_reason,
            expires_at=row.expires_at,
            seconds_left=(row.expires_at - self._now()).total_seconds(),
            document_status=self._tables.documents[row.document_id].status,
        )

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        now = self._now()
        live = [
            row
            for row in self._tables.sessions.values()
            if row.owner_id == owner_id
            and row.sha256 == sha256
            and row.status is SessionStatus.PENDING
            and self._tables.documents[row.document_id].status is Status.PENDING
            and row.expires_at > now
        ]
        return self._session(max(live, key=lambda row: row.created_at)) if live else None

    async def lock_content(self, owner_id: str, sha256: str) -> None:
        self.content_locks.append((owner_id, sha256))

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
        assert document_id in self._tables.documents, "the session's pending document is inserted first"
        now = self._now()
        row = SessionRow(
            document_id=document_id,
            owner_id=owner_id,
            size_bytes=size_bytes,
            sha256=sha256,
            part_size=part_size,
            multipart_upload_id=None,
            expires_at=now + timedelta(seconds=ttl_seconds),
            created_at=now,
        )
        self._tables.sessions[document_id] = row
        return self._session(row)

    async def record_multipart(self, upload_id: uuid.UUID, multipart_upload_id: str) -> bool:
        row = self._tables.sessions.get(upload_id)
        if row is None or row.multipart_upload_id is not None or row.status is not SessionStatus.PENDING:
            return False
        self._tables.sessions[upload_id] = replace(row, multipart_upload_id=multipart_upload_id)
        return True

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        row = self._tables.sessions.get(upload_id)
        return self._session(row) if row and row.owner_id == owner_id else None

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> None:
        row = self._tables.sessions.get(upload_id)
        if row is not None:
            self._tables.sessions[upload_id] = replace(row, status=SessionStatus.FAILED, failure_reason=str(reason))

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        row = self._tables.sessions.get(upload_id)
        if row is not None and row.status is SessionStatus.PENDING:
            self._tables.sessions[upload_id] = replace(row, status=SessionStatus.COMPLETED)
