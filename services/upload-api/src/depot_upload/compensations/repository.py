"""PostgreSQL adapter of the compensation worker (:mod:`depot_upload.compensations.service`)."""

from __future__ import annotations

import uuid

import asyncpg

from depot_common.db import Connection
from depot_common.errors import Duplicate, Gone
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentFailed
from depot_common.outbox import enqueue
from depot_upload.compensations.ports import StoredRow, UploadState
from depot_upload.documents.repository import SCHEMA, SOURCE, PostgresDocuments
from depot_upload.domain import StoredBlob
from depot_upload.presigned.domain import FailureReason
from depot_upload.presigned.repository import PostgresUploadSessions


class PostgresCompensations:
    def __init__(self, pool: asyncpg.Pool, *, upload_ttl: int) -> None:
        self._pool = pool
        self._documents = PostgresDocuments(pool)
        self._sessions = PostgresUploadSessions(pool)
        self._upload_ttl = upload_ttl

    async def live_document_owns(self, conn: Connection, key: str) -> bool:
        rows = await conn.fetch("SELECT status FROM upload.documents WHERE object_key = $1 FOR UPDATE", key)
        return any(row["status"] in ("pending", "stored") for row in rows)

    async def lock_document(self, conn: Connection, document_id: uuid.UUID) -> StoredRow | None:
        row = await conn.fetchrow(
            "SELECT status, object_key, size_bytes, version FROM upload.documents WHERE id = $1 FOR UPDATE",
            document_id,
        )
        return StoredRow(**dict(row)) if row else None

    async def fail_lost_blob(self, conn: Connection, document_id: uuid.UUID, version: int) -> bool:
        owner = await conn.fetchval(
            "UPDATE upload.documents SET status = 'failed', version = version + 1, updated_at = clock_timestamp()"
            " WHERE id = $1 AND status = 'stored' AND version = $2 RETURNING owner_id",
            document_id,
            version,
        )
        if owner is None:
            return False
        event = CloudEvent[DocumentFailed](
            source=SOURCE,
            type="document.failed",
            subject=str(document_id),
            data=DocumentFailed(document_id=document_id, owner_id=owner, reason="blob_lost"),
        )
        await enqueue(conn, SCHEMA, topic=DOCUMENTS_TOPIC, key=str(document_id), event=event)
        return True

    async def record_quarantine(
        self, conn: Connection, *, key: str, quarantined: str, size_bytes: int, retention_s: int, run_id: uuid.UUID
    ) -> None:
        await conn.execute(
            "INSERT INTO upload.quarantine (quarantined_key, object_key, size_bytes, run_id, purge_after)"
            " VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))"
            " ON CONFLICT (quarantined_key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,"
            " run_id = EXCLUDED.run_id, quarantined_at = clock_timestamp(), purge_after = EXCLUDED.purge_after,"
            " purged_at = NULL",
            quarantined,
            key,
            size_bytes,
            run_id,
            float(retention_s),
        )

    async def upload_state(self, document_id: uuid.UUID) -> UploadState | None:
        row = await self._pool.fetchrow(
            "SELECT d.status, d.object_key,"
            " CASE WHEN s.document_id IS NOT NULL THEN s.expires_at <= clock_timestamp()"
            "      ELSE d.created_at + make_interval(secs => $2) <= clock_timestamp() END AS expired,"
            " s.size_bytes AS declared_size, s.sha256 AS declared_sha256, s.multipart_upload_id"
            " FROM upload.documents d LEFT JOIN upload.upload_sessions s ON s.document_id = d.id WHERE d.id = $1",
            document_id,
            float(self._upload_ttl),
        )
        if row is None:
            return None
        declared = None
        if row["declared_sha256"] is not None:
            declared = StoredBlob(size_bytes=row["declared_size"], sha256=row["declared_sha256"])
        return UploadState(
            status=row["status"],
            object_key=row["object_key"],
            expired=row["expired"],
            declared=declared,
            multipart_upload_id=row["multipart_upload_id"],
        )

    async def finalize(self, document_id: uuid.UUID, blob: StoredBlob) -> bool:
        try:
            await self._documents.mark_stored(document_id, blob)
        except Gone:
            return False
        except Duplicate:  # the owner stored this content meanwhile: this upload is not needed
            await self._sessions.mark_failed(document_id, FailureReason.DUPLICATE)
            return False
        await self._sessions.mark_completed(document_id)
        return True

    async def fail_expired(self, document_id: uuid.UUID) -> bool:
        return await self._sessions.mark_failed(document_id, FailureReason.EXPIRED)

    async def status(self, document_id: uuid.UUID) -> str | None:
        status: str | None = await self._pool.fetchval("SELECT status FROM upload.documents WHERE id = $1", document_id)
        return status

    async def mark_purged(self, quarantined: str) -> None:
        await self._pool.execute(
            "UPDATE upload.quarantine SET purged_at = clock_timestamp() WHERE quarantined_key = $1"
            " AND purged_at IS NULL",
            quarantined,
        )
