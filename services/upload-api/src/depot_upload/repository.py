"""PostgreSQL adapter for documents (schema ``upload``)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from depot_common.errors import Duplicate, Gone
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentStored
from depot_common.outbox import enqueue
from depot_upload.domain import Document, Status, StoredBlob

SCHEMA = "upload"
SOURCE = "depot/upload-api"
_COLUMNS = (
    "id, owner_id, filename, content_type, object_key, size_bytes, sha256, status, version, created_at, updated_at"
)


def _document(row: asyncpg.Record) -> Document:
    values: dict[str, Any] = dict(row)
    values["status"] = Status(values["status"])
    return Document(**values)


class PostgresDocuments:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document:
        row = await self._pool.fetchrow(
            "INSERT INTO upload.documents (id, owner_id, filename, content_type, object_key, status)"
            f" VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING {_COLUMNS}",
            document_id,
            owner_id,
            filename,
            content_type,
            object_key,
        )
        assert row is not None
        return _document(row)

    async def mark_stored(self, document_id: uuid.UUID, blob: StoredBlob) -> Document:
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "UPDATE upload.documents SET status = 'stored', size_bytes = $2, sha256 = $3,"
                    " version = version + 1, updated_at = clock_timestamp()"
                    f" WHERE id = $1 AND status = 'pending' RETURNING {_COLUMNS}",
                    document_id,
                    blob.size_bytes,
                    blob.sha256,
                )
            except asyncpg.UniqueViolationError:
                owner = await self._pool.fetchval("SELECT owner_id FROM upload.documents WHERE id = $1", document_id)
                existing = await self.find_stored_by_sha256(str(owner), blob.sha256)
                raise Duplicate(
                    "you already have a document with this content",
                    existing_id=str(existing.id) if existing else None,
                ) from None
            if row is None:
                raise Gone("the upload expired before it completed", code="upload_expired")
            document = _document(row)
            event = CloudEvent[DocumentStored](
                source=SOURCE,
                type="document.stored",
                subject=str(document.id),
                data=DocumentStored(
                    document_id=document.id,
                    owner_id=document.owner_id,
                    filename=document.filename,
                    content_type=document.content_type,
                    size_bytes=blob.size_bytes,
                    sha256=blob.sha256,
                    object_key=document.object_key,
                    version=document.version,
                ),
            )
            await enqueue(conn, SCHEMA, topic=DOCUMENTS_TOPIC, key=str(document.id), event=event)
            return document

    async def discard_pending(self, document_id: uuid.UUID) -> None:
        await self._pool.execute("DELETE FROM upload.documents WHERE id = $1 AND status = 'pending'", document_id)

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM upload.documents WHERE id = $1 AND owner_id = $2 AND status <> 'deleted'",
            document_id,
            owner_id,
        )
        return _document(row) if row else None

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM upload.documents WHERE owner_id = $1 AND sha256 = $2 AND status = 'stored'",
            owner_id,
            sha256,
        )
        return _document(row) if row else None
