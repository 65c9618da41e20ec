"""In-memory fake of the document repository (:class:`depot_upload.documents.ports.DocumentRepository`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from depot_common.errors import Duplicate
from depot_common.events import type_of
from depot_upload.documents.ports import IdempotencyKeyTaken
from depot_upload.domain import Document, IllegalTransition, OwnerStatus, PageCursor, Status, Transition

if TYPE_CHECKING:
    from depot_upload.fakes import Tables


class FakeDocuments:
    """The documents table with the constraints PostgreSQL enforces: one stored copy of a content per owner,
    one record per Idempotency-Key, a save only on top of the version it read."""

    def __init__(self, tables: Tables, now: Callable[[], datetime]) -> None:
        self._tables = tables
        self._now = now

    async def insert_pending(
        self, *, document_id: uuid.UUID, owner_id: str, filename: str, content_type: str, object_key: str
    ) -> Document:
        now = self._now()
        document = Document(
            id=document_id,
            owner_id=owner_id,
            filename=filename,
            content_type=content_type,
            object_key=object_key,
            status=Status.PENDING,
            version=1,
            created_at=now,
            updated_at=now,
        )
        assert document_id not in self._tables.documents
        self._tables.documents[document_id] = document
        return document

    async def lock(self, document_id: uuid.UUID) -> Document | None:
        return self._tables.documents.get(document_id)

    async def save(self, document: Document) -> Document:
        current = self._tables.documents.get(document.id)
        if current is None or current.version != document.version - 1:
            raise IllegalTransition(f"document {document.id} changed since it was locked")
        if document.status is Status.STORED:
            existing = await self.find_stored_by_sha256(document.owner_id, str(document.sha256))
            if existing is not None and existing.id != document.id:
                raise Duplicate("you already have a document with this content", existing_id=str(existing.id))
        saved = replace(document, updated_at=self._now())
        self._tables.documents[document.id] = saved
        return saved

    async def apply_alone(self, transition: Transition[Any]) -> Document | None:
        try:
            saved = await self.save(transition.document)
        except IllegalTransition:
            return None
        self._tables.outbox.append((type_of(type(transition.event)), transition.event))
        return saved

    async def record_idempotency(self, owner_id: str, key: str, sha256: str, document: Document) -> None:
        if (owner_id, key) in self._tables.idempotency:
            raise IdempotencyKeyTaken(key)
        self._tables.idempotency[(owner_id, key)] = (sha256, document)

    async def discard_pending(self, document_id: uuid.UUID) -> None:
        document = self._tables.documents.get(document_id)
        if document is not None and document.status is Status.PENDING:
            del self._tables.documents[document_id]

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None:
        document = self._tables.documents.get(document_id)
        if document is None or document.owner_id != owner_id or document.status is Status.DELETED:
            return None
        return document

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None:
        return next(
            (
                d
                for d in self._tables.documents.values()
                if d.owner_id == owner_id and d.sha256 == sha256 and d.status is Status.STORED
            ),
            None,
        )

    async def list_page(self, owner_id: str, *, limit: int, after: PageCursor | None) -> list[Document]:
        live = [d for d in self._tables.documents.values() if d.owner_id == owner_id and d.status is not Status.DELETED]
        live.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        if after is not None:
            live = [d for d in live if (d.created_at, d.id) < (after.created_at, after.id)]
        return live[:limit]

    async def owner_status(self, owner_id: str) -> OwnerStatus:
        pending = sum(
            1 for d in self._tables.documents.values() if d.owner_id == owner_id and d.status is Status.PENDING
        )
        return OwnerStatus(
            outbox_backlog=len(self._tables.outbox), oldest_unpublished_age_s=0.0, pending_uploads=pending
        )

    async def find_idempotent(self, owner_id: str, key: str) -> tuple[str, Document] | None:
        return self._tables.idempotency.get((owner_id, key))
