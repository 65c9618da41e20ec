"""Use cases of the upload API. Entry points translate requests into these calls.

Write path (crash-safe at every step): ``pending`` row (TX1) → bytes streamed to S3 under
``documents/<id>`` with ``If-None-Match: *``, hashed as they stream → ``stored`` plus the
``document.stored`` outbox event (TX2). A crash leaves either a ``pending`` row past its
TTL or an object without a live row, both of which the reconciler repairs. Bytes are only
deleted after the transaction that stops referencing them has committed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import structlog

from depot_common.errors import Duplicate, NotFound
from depot_upload.domain import Document, normalize_content_type, object_key, validate_filename
from depot_upload.ports import BlobStore, DocumentRepository

log = structlog.get_logger(__name__)


class UploadService:
    def __init__(self, *, documents: DocumentRepository, blobs: BlobStore, max_upload_bytes: int) -> None:
        self._documents = documents
        self._blobs = blobs
        self._max_upload_bytes = max_upload_bytes

    async def upload(
        self, *, owner_id: str, filename: str | None, content_type: str | None, chunks: AsyncIterator[bytes]
    ) -> Document:
        """Store one file for ``owner_id``; return the ``stored`` document."""
        name = validate_filename(filename)
        document_id = uuid.uuid4()
        key = object_key(document_id)
        media_type = normalize_content_type(content_type, name)
        await self._documents.insert_pending(
            document_id=document_id, owner_id=owner_id, filename=name, content_type=media_type, object_key=key
        )
        structlog.contextvars.bind_contextvars(document_id=str(document_id))
        try:
            blob = await self._blobs.put_stream(key, chunks, max_bytes=self._max_upload_bytes, content_type=media_type)
        except Exception:  # refused, too large, client gone, S3 down: never acknowledged
            await self._documents.discard_pending(document_id)
            raise
        existing = await self._documents.find_stored_by_sha256(owner_id, blob.sha256)
        try:
            if existing is not None:
                raise Duplicate("you already have a document with this content", existing_id=str(existing.id))
            document = await self._documents.mark_stored(document_id, blob)
        except Duplicate:
            await self._documents.discard_pending(document_id)
            await self._blobs.delete(key)
            log.info("upload.duplicate", sha256=blob.sha256)
            raise
        log.info("upload.stored", size_bytes=blob.size_bytes, sha256=blob.sha256)
        return document

    async def get(self, *, owner_id: str, document_id: uuid.UUID) -> Document:
        """The caller's document; another owner's is reported as not found."""
        document = await self._documents.get(owner_id, document_id)
        if document is None:
            raise NotFound("document not found")
        return document
