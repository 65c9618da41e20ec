"""PostgreSQL adapter for presigned upload sessions (table ``upload.upload_sessions``).

A session belongs to one document (same id); the document row carries the life cycle the
rest of Depot sees. Every expiry is computed by PostgreSQL's clock, so application hosts
with drifting clocks agree on what is expired.
"""

from __future__ import annotations

import uuid

import asyncpg

from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentFailed
from depot_common.outbox import enqueue
from depot_upload.documents.repository import SCHEMA, SOURCE
from depot_upload.domain import Status, object_key
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
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        row = await self._pool.fetchrow(
            f"{_SELECT} WHERE s.owner_id = $1 AND s.sha256 = $2 AND {_LIVE} ORDER BY s.created_at DESC LIMIT 1",
            owner_id,
            sha256,
        )
        return _session(row) if row else None

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
        async with self._pool.acquire() as conn, conn.transaction():
            # One start at a time per (owner, content): concurrent starts share one upload.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"upload:{owner_id}:{sha256}")
            row = await conn.fetchrow(
                f"{_SELECT} WHERE s.owner_id = $1 AND s.sha256 = $2 AND {_LIVE} ORDER BY s.created_at DESC LIMIT 1",
                owner_id,
                sha256,
            )
            if row is not None:
                return _session(row), False
            await conn.execute(
                "INSERT INTO upload.documents (id, owner_id, filename, content_type, object_key, status)"
                " VALUES ($1, $2, $3, $4, $5, 'pending')",
                document_id,
                owner_id,
                filename,
                content_type,
                object_key(document_id),
            )
            await conn.execute(
                "INSERT INTO upload.upload_sessions"
                " (document_id, owner_id, size_bytes, sha256, part_size, multipart_upload_id, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + make_interval(secs => $7))",
                document_id,
                owner_id,
                size_bytes,
                sha256,
                part_size,
                multipart_upload_id,
                float(ttl_seconds),
            )
            row = await conn.fetchrow(f"{_SELECT} WHERE s.document_id = $1", document_id)
            assert row is not None
            return _session(row), True

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        row = await self._pool.fetchrow(f"{_SELECT} WHERE s.document_id = $1 AND s.owner_id = $2", upload_id, owner_id)
        return _session(row) if row else None

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            document = await conn.fetchrow(
                "UPDATE upload.documents SET status = 'failed', version = version + 1, updated_at = clock_timestamp()"
                " WHERE id = $1 AND status = 'pending' RETURNING id, owner_id",
                upload_id,
            )
            if document is None:
                return False
            await conn.execute(
                "UPDATE upload.upload_sessions SET status = 'failed', failure_reason = $2,"
                " updated_at = clock_timestamp() WHERE document_id = $1",
                upload_id,
                str(reason),
            )
            event = CloudEvent[DocumentFailed](
                source=SOURCE,
                type="document.failed",
                subject=str(upload_id),
                data=DocumentFailed(document_id=upload_id, owner_id=document["owner_id"], reason=f"upload_{reason}"),
            )
            await enqueue(conn, SCHEMA, topic=DOCUMENTS_TOPIC, key=str(upload_id), event=event)
            return True

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        await self._pool.execute(
            "UPDATE upload.upload_sessions SET status = 'completed', updated_at = clock_timestamp()"
            " WHERE document_id = $1 AND status = 'pending'",
            upload_id,
        )
