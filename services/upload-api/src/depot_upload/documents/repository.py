"""PostgreSQL adapter for documents (schema ``upload``).

Bound to the pool for reads, or to a unit of work's connection
(:class:`depot_upload.postgres.PostgresUnitOfWork`) for the writes of a use case.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from depot_common.db import Connection
from depot_common.errors import Duplicate
from depot_common.events import DOCUMENTS_TOPIC, CloudEvent, type_of
from depot_common.outbox import backlog, channel, outbox_row
from depot_upload.documents.ports import IdempotencyKeyTaken
from depot_upload.domain import Document, IllegalTransition, OwnerStatus, PageCursor, Status, Transition

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


def document_event(transition: Transition[Any]) -> CloudEvent[Any]:
    """The CloudEvent of a document's transition, as the outbox stores it."""
    return CloudEvent[Any](
        source=SOURCE,
        type=type_of(type(transition.event)),
        subject=str(transition.document.id),
        data=transition.event,
    )


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
    def __init__(self, db: asyncpg.Pool | Connection) -> None:
        self._db = db

    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document:
        row = await self._db.fetchrow(
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

    async def lock(self, document_id: uuid.UUID) -> Document | None:
        row = await self._db.fetchrow(f"SELECT {COLUMNS} FROM upload.documents WHERE id = $1 FOR UPDATE", document_id)
        return to_document(row) if row else None

    async def save(self, document: Document) -> Document:
        conn = self._connection()
        try:
            async with conn.transaction():  # a savepoint: a refused store leaves the unit of work usable
                row = await conn.fetchrow(
                    "UPDATE upload.documents SET status = $2, size_bytes = $3, sha256 = $4, version = $5,"
                    f" updated_at = clock_timestamp() WHERE id = $1 AND version = $5 - 1 RETURNING {COLUMNS}",
                    document.id,
                    str(document.status),
                    document.size_bytes,
                    document.sha256,
                    document.version,
                )
        except asyncpg.UniqueViolationError:  # documents_owner_sha256_stored: the owner stored this content
            existing = await self.find_stored_by_sha256(document.owner_id, str(document.sha256))
            raise Duplicate(_DUPLICATE, existing_id=str(existing.id) if existing else None) from None
        if row is None:
            raise IllegalTransition(f"document {document.id} changed since it was locked")
        return to_document(row)

    async def apply_alone(self, transition: Transition[Any]) -> Document | None:
        """The transition's document, its outbox event and the relay's notification in one statement that
        commits on its own (one round trip, no transaction around it): the document as saved, ``None`` when
        the row is no longer the version the transition started from."""
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("apply_alone commits on its own: call it on the pool, not in a unit of work")
        document = transition.document
        event = outbox_row(topic=DOCUMENTS_TOPIC, key=str(document.id), event=document_event(transition))
        try:
            row = await self._db.fetchrow(
                "WITH saved AS (UPDATE upload.documents SET status = $2, size_bytes = $3, sha256 = $4, version = $5,"
                f" updated_at = clock_timestamp() WHERE id = $1 AND version = $5 - 1 RETURNING {COLUMNS}),"
                " queued AS (INSERT INTO upload.outbox (event_id, topic, key, value, headers)"
                " SELECT $6::uuid, $7::text, $8::text, $9::json, $10::json FROM saved RETURNING 1)"
                f" SELECT {COLUMNS} FROM saved, (SELECT count(pg_notify($11, '')) FROM queued) AS notified",
                document.id,
                str(document.status),
                document.size_bytes,
                document.sha256,
                document.version,
                *event,
                channel(SCHEMA),
            )
        except asyncpg.UniqueViolationError:  # documents_owner_sha256_stored: nothing was written
            existing = await self.find_stored_by_sha256(document.owner_id, str(document.sha256))
            raise Duplicate(_DUPLICATE, existing_id=str(existing.id) if existing else None) from None
        return to_document(row) if row else None

    async def record_idempotency(self, owner_id: str, key: str, sha256: str, document: Document) -> None:
        try:
            await self._db.execute(
                "INSERT INTO upload.idempotency_keys (owner_id, key, sha256, document) VALUES ($1, $2, $3, $4)",
                owner_id,
                key,
                sha256,
                _snapshot(document),
            )
        except asyncpg.UniqueViolationError:
            raise IdempotencyKeyTaken("another request recorded this Idempotency-Key first") from None

    def _connection(self) -> Connection:
        if isinstance(self._db, asyncpg.Pool):
            raise TypeError("writes of a use case run in a unit of work, not on the pool")
        return self._db

    async def discard_pending(self, document_id: uuid.UUID) -> None:
        await self._db.execute("DELETE FROM upload.documents WHERE id = $1 AND status = 'pending'", document_id)

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None:
        row = await self._db.fetchrow(
            f"SELECT {COLUMNS} FROM upload.documents WHERE id = $1 AND owner_id = $2 AND status <> 'deleted'",
            document_id,
            owner_id,
        )
        return to_document(row) if row else None

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None:
        row = await self._db.fetchrow(
            f"SELECT {COLUMNS} FROM upload.documents WHERE owner_id = $1 AND sha256 = $2 AND status = 'stored'",
            owner_id,
            sha256,
        )
        return to_document(row) if row else None

    async def list_page(self, owner_id: str, *, limit: int, after: PageCursor | None) -> list[Document]:
        rows = await self._db.fetch(
            f"SELECT {COLUMNS} FROM upload.documents WHERE owner_id = $1 AND status <> 'deleted'"
            " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            owner_id,
            after.created_at if after else None,
            after.id if after else None,
            limit,
        )
        return [to_document(row) for row in rows]

    async def owner_status(self, owner_id: str) -> OwnerStatus:
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                return await _owner_status(conn, owner_id)
        return await _owner_status(self._db, owner_id)

    async def purge_idempotency_keys(self, older_than_s: int) -> int:
        """Forget Idempotency-Key records older than ``older_than_s`` seconds; return how many."""
        result = await self._db.execute(
            "DELETE FROM upload.idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            float(older_than_s),
        )
        return int(result.split()[-1])

    async def find_idempotent(self, owner_id: str, key: str) -> tuple[str, Document] | None:
        row = await self._db.fetchrow(
            "SELECT sha256, document FROM upload.idempotency_keys WHERE owner_id = $1 AND key = $2", owner_id, key
        )
        return (row["sha256"], _from_snapshot(row["document"])) if row else None


async def _owner_status(conn: Connection, owner_id: str) -> OwnerStatus:
    count, age = await backlog(conn, SCHEMA)
    pending = await conn.fetchval(
        "SELECT count(*) FROM upload.documents WHERE owner_id = $1 AND status = 'pending'", owner_id
    )
    return OwnerStatus(outbox_backlog=count, oldest_unpublished_age_s=round(age, 3), pending_uploads=int(pending))
