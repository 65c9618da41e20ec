"""PostgreSQL adapter of the compensation worker (:mod:`depot_upload.compensations.service`).

Bound to a unit of work's connection (:class:`depot_upload.postgres.PostgresUnitOfWork`).
"""

from __future__ import annotations

import uuid

import asyncpg

from depot_common.db import Connection
from depot_upload.compensations.ports import UploadState
from depot_upload.domain import StoredBlob


class PostgresCompensations:
    def __init__(self, db: asyncpg.Pool | Connection) -> None:
        self._db = db

    async def live_document_owns(self, key: str) -> bool:
        rows = await self._db.fetch("SELECT status FROM upload.documents WHERE object_key = $1 FOR UPDATE", key)
        return any(row["status"] in ("pending", "stored") for row in rows)

    async def record_quarantine(
        self, *, key: str, quarantined: str, size_bytes: int, retention_s: int, run_id: uuid.UUID
    ) -> None:
        await self._db.execute(
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

    async def upload_state(self, document_id: uuid.UUID, *, upload_ttl: int) -> UploadState | None:
        row = await self._db.fetchrow(
            "SELECT d.status, d.object_key,"
            " CASE WHEN s.document_id IS NOT NULL THEN s.expires_at <= clock_timestamp()"
            "      ELSE d.created_at + make_interval(secs => $2) <= clock_timestamp() END AS expired,"
            " s.size_bytes AS declared_size, s.sha256 AS declared_sha256, s.multipart_upload_id"
            " FROM upload.documents d LEFT JOIN upload.upload_sessions s ON s.document_id = d.id WHERE d.id = $1",
            document_id,
            float(upload_ttl),
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

    async def mark_purged(self, quarantined: str) -> None:
        await self._db.execute(
            "UPDATE upload.quarantine SET purged_at = clock_timestamp() WHERE quarantined_key = $1"
            " AND purged_at IS NULL",
            quarantined,
        )

    async def multipart_claimed(self, key: str, multipart_upload_id: str, *, upload_ttl: int) -> bool:
        claimed: bool = await self._db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM upload.upload_sessions WHERE multipart_upload_id = $2 AND status = 'pending')"
            " OR EXISTS (SELECT 1 FROM upload.documents WHERE object_key = $1 AND status = 'pending'"
            "            AND created_at > clock_timestamp() - make_interval(secs => $3))",
            key,
            multipart_upload_id,
            float(upload_ttl),
        )
        return claimed
