"""PostgreSQL adapter for presigned upload sessions (table ``upload.upload_sessions``).

A session belongs to one document (same id); the document row carries the life cycle the
rest of Depot sees (:mod:`depot_upload.documents.repository`). Every expiry is computed by
PostgreSQL's clock, so application hosts with drifting clocks agree on what is expired.
"""

from __future__ import annotations

import uuid

import asyncpg

from depot_common.db import Connection
from depot_upload.domain import Status
from depot_upload.presigned.domain import FailureReason, SessionStatus, UploadSession

_SELECT = (
    "SELECT s.document_id, s.owner_id, s.size_bytes, s.sha256, s.part_size, s.multipart_upload_id, s.status,"
    " s.failure_reason, s.expires_at, extract(epoch FROM s.expires_at - clock_timestamp())::float8 AS seconds_left,"
    " d.status AS document_status"
    " FROM upload.upload_sessions s JOIN upload.documents d ON d.id = s.document_id"
)
_LIVE = "s.status = 'pending' AND d.status = 'pending' AND s.expires_at > clock_timestamp()"


def _session(row: asyncpg.Record) -> UploadSession:
    return UploadSession(
        id=row["document_id"],
        owner_id=row["owner_id"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        part_size=row["part_size"],
        multipart_upload_id=row["multipart_upload_id"],
        status=SessionStatus(row["status"]),
        failure_reason=row["failure_reason"],
        expires_at=row["expires_at"],
        seconds_left=row["seconds_left"],
        document_status=Status(row["document_status"]),
    )


class PostgresUploadSessions:
    def __init__(self, db: asyncpg.Pool | Connection) -> None:
        self._db = db

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        row = await self._db.fetchrow(
            f"{_SELECT} WHERE s.owner_id = $1 AND s.sha256 = $2 AND {_LIVE} ORDER BY s.created_at DESC LIMIT 1",
            owner_id,
            sha256,
        )
        return _session(row) if row else None

    async def lock_content(self, owner_id: str, sha256: str) -> None:
        await self._db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"upload:{owner_id}:{sha256}")

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
        await self._db.execute(
            "INSERT INTO upload.upload_sessions (document_id, owner_id, size_bytes, sha256, part_size, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, clock_timestamp() + make_interval(secs => $6))",
            document_id,
            owner_id,
            size_bytes,
            sha256,
            part_size,
            float(ttl_seconds),
        )
        row = await self._db.fetchrow(f"{_SELECT} WHERE s.document_id = $1", document_id)
        assert row is not None
        return _session(row)

    async def record_multipart(self, upload_id: uuid.UUID, multipart_upload_id: str) -> bool:
        recorded = await self._db.fetchval(
            "UPDATE upload.upload_sessions SET multipart_upload_id = $2, updated_at = clock_timestamp()"
            " WHERE document_id = $1 AND multipart_upload_id IS NULL AND status = 'pending' RETURNING true",
            upload_id,
            multipart_upload_id,
        )
        return recorded is True

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        row = await self._db.fetchrow(f"{_SELECT} WHERE s.document_id = $1 AND s.owner_id = $2", upload_id, owner_id)
        return _session(row) if row else None

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> None:
        await self._db.execute(
            "UPDATE upload.upload_sessions SET status = 'failed', failure_reason = $2,"
            " updated_at = clock_timestamp() WHERE document_id = $1",
            upload_id,
            str(reason),
        )

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        await self._db.execute(
            "UPDATE upload.upload_sessions SET status = 'completed', updated_at = clock_timestamp()"
            " WHERE document_id = $1 AND status = 'pending'",
            upload_id,
        )
