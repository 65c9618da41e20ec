"""PostgreSQL adapter for documents (schema ``upload``)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from depot_common.db import Connection
from depot_common.errors import Duplicate, Gone
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, DocumentDeleted, DocumentStored
from depot_common.outbox import backlog, enqueue
from depot_upload.documents.ports import IdempotencyKeyTaken
from depot_upload.domain import Document, OwnerStatus, PageCursor, Status, StoredBlob

SCHEMA = "upload"
SOURCE = "depot/upload-api"
COLUMNS = (
    "id, owner_id, filename, content_type, object_key, size_bytes, sha256, status, version, created_at, updated_at"
)
_DUPLICATE = "you already have a document with this content"


def to_document(row: asyncpg.Record | dict[str, Any]) -> Document:
    values: dict[str, Any] = dict(row)
    values["status"] = Status(values["status"])
    return Document(**values)


def _snapshot(document: Document) -> dict[str, Any]:
    values = dataclasses.asdict(document)
    values["id"] = str(document.id)
    values["created_at"] = document.created_at.isoformat()
    values["updated_at"] = document.updated_at.isoformat()
    return values


def _from_snapshot(values: dict[str, Any]) -> Document:
    values = {
        **values,
        "id": uuid.UUID(values["id"]),
        "created_at": datetime.fromisoformat(values["created_at"]),
        "updated_at": datetime.fromisoformat(values["updated_at"]),
    }
    return to_document(values)


class PostgresDocuments:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document:
        row = await self._pool.fetchrow(
            "INSERT INTO upload.documents (id, owner_id, filename, content_type, object_key, status)"
            f" VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING {COLUMNS}",
            document_id,
            owner_id,
            filename,
            content_type,
            object_key,
        )
        assert row is not None
        return to_document(row)

    async def mark_stored(
        self, document_id: uuid.UUID, blob: StoredBlob, *, idempotency_key: str | None = None
    ) -> Document:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    document = await self._store(conn, document_id, blob)
                    if idempotency_key is not None:
                        await conn.execute(
                            "INSERT INTO upload.idempotency_keys (owner_id, key, sha256, document)"
                            " VALUES ($1, $2, $3, $4)",
                            document.owner_id,
                            idempotency_key,
                            blob.sha256,
                            _snapshot(document),
                        )
                    return document
            except asyncpg.UniqueViolationError as error:
                if error.constraint_name == "idempotency_keys_pkey":
                    raise IdempotencyKeyTaken(idempotency_key) from None
                owner = await conn.fetchval("SELECT owner_id FROM upload.documents WHERE id = $1", document_id)
                existing = await self.find_stored_by_sha256(str(owner), blob.sha256)
                raise Duplicate(_DUPLICATE, existing_id=str(existing.id) if existing else None) from None

    async def _store(self, conn: Connection, document_id: uuid.UUID, blob: StoredBlob) -> Document:
        row = await conn.fetchrow(
            "UPDATE upload.documents SET status = 'stored', size_bytes = $2, sha256 = $3,"
            " version = version + 1, updated_at = clock_timestamp()"
            f" WHERE id = $1 AND status = 'pending' RETURNING {COLUMNS}",
            document_id,
            blob.size_bytes,
            blob.sha256,
        )
        if row is None:
            raise Gone("the upload expired before it completed", code="upload_expired")
        document = to_document(row)
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
            f"SELECT {COLUMNS} FROM upload.documents WHERE id = $1 AND owner_id = $2 AND status <> 'deleted'",
            document_id,
            owner_id,
        )
        return to_document(row) if row else None

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {COLUMNS} FROM upload.documents WHERE owner_id = $1 AND sha256 = $2 AND status = 'stored'",
            owner_id,
            sha256,
        )
        return to_document(row) if row else None

    async def list_page(self, owner_id: str, *, limit: int, after: PageCursor | None) -> list[Document]:
        rows = await self._pool.fetch(
            f"SELECT {COLUMNS} FROM upload.documents WHERE owner_id = $1 AND status <> 'deleted'"
            " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            owner_id,
            after.created_at if after else None,
            after.id if after else None,
            limit,
        )
        return [to_document(row) for row in rows]

    async def mark_deleted(self, owner_id: str, document_id: uuid.UUID) -> Document | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE upload.documents SET status = 'deleted', version = version + 1, updated_at = clock_timestamp()"
                f" WHERE id = $1 AND owner_id = $2 AND status <> 'deleted' RETURNING {COLUMNS}",
                document_id,
                owner_id,
            )
            if row is None:
                return None
            document = to_document(row)
            event = CloudEvent[DocumentDeleted](
                source=SOURCE,
                type="document.deleted",
                subject=str(document.id),
                data=DocumentDeleted(document_id=document.id, owner_id=owner_id, version=document.version),
            )
            await enqueue(conn, SCHEMA, topic=DOCUMENTS_TOPIC, key=str(document.id), event=event)
            return document

    async def owner_status(self, owner_id: str) -> OwnerStatus:
        async with self._pool.acquire() as conn:
            count, age = await backlog(conn, SCHEMA)
            pending = await conn.fetchval(
                "SELECT count(*) FROM upload.documents WHERE owner_id = $1 AND status = 'pending'", owner_id
            )
        return OwnerStatus(outbox_backlog=count, oldest_unpublished_age_s=round(age, 3), pending_uploads=int(pending))

    async def purge_idempotency_keys(self, older_than_s: int) -> int:
        """Forget Idempotency-Key records older than ``older_than_s`` seconds; return how many."""
        result = await self._pool.execute(
            "DELETE FROM upload.idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            float(older_than_s),
        )
        return int(result.split()[-1])

    async def find_idempotent(self, owner_id: str, key: str) -> tuple[str, Document] | None:
        row = await self._pool.fetchrow(
            "SELECT sha256, document FROM upload.idempotency_keys WHERE owner_id = $1 AND key = $2", owner_id, key
        )
        return (row["sha256"], _from_snapshot(row["document"])) if row else None
