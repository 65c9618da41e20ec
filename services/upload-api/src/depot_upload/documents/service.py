"""Use cases of the upload API. Entry points translate requests into these calls.

Write path (crash-safe at every step): ``pending`` row (TX1, one statement) → bytes streamed to
S3 under ``documents/<id>`` with ``If-None-Match: *``, hashed as they stream → ``stored`` plus the
``document.stored`` outbox event (TX2: one statement, or a unit of work with an Idempotency-Key).
A crash leaves either a ``pending`` row past its TTL or an object without a live row, both of
which the reconciler repairs. Bytes are only deleted after the transaction that stops
referencing them has committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import structlog

from depot_common.errors import DepotError, Duplicate, Gone, NotFound, PayloadTooLarge, Unprocessable
from depot_common.faults import CrashPoints
from depot_upload import metrics
from depot_upload.documents.ports import BlobStore, DocumentRepository, IdempotencyKeyTaken
from depot_upload.domain import (
    Document,
    OwnerStatus,
    Page,
    PageCursor,
    Status,
    StoredBlob,
    UploadResult,
    normalize_content_type,
    object_key,
    validate_filename,
    validate_idempotency_key,
)
from depot_upload.unit_of_work import UnitOfWorkFactory

log = structlog.get_logger(__name__)

MAX_PAGE = 100


class UploadService:
    def __init__(
        self,
        *,
        documents: DocumentRepository,
        uow: UnitOfWorkFactory,
        blobs: BlobStore,
        max_upload_bytes: int,
        download_url_ttl: int = 300,
        crash_points: CrashPoints | None = None,
    ) -> None:
        self._documents = documents
        self._uow = uow
        self._blobs = blobs
        self._max_upload_bytes = max_upload_bytes
        self._download_url_ttl = download_url_ttl
        self._crash = crash_points or CrashPoints()

    async def upload(
        self,
        *,
        owner_id: str,
        filename: str | None,
        content_type: str | None,
        chunks: AsyncIterator[bytes],
        idempotency_key: str | None = None,
    ) -> UploadResult:
        """Store one file for ``owner_id``, or replay the response of an earlier request with the same key."""
        try:
            result = await self._upload(owner_id, filename, content_type, chunks, idempotency_key)
        except Exception as error:
            metrics.UPLOADS.labels(getattr(error, "code", "error")).inc()
            raise
        metrics.UPLOADS.labels("replayed" if result.replayed else "stored").inc()
        if not result.replayed:
            metrics.BYTES_STORED.inc(result.document.size_bytes or 0)
        return result

    async def _upload(
        self,
        owner_id: str,
        filename: str | None,
        content_type: str | None,
        chunks: AsyncIterator[bytes],
        idempotency_key: str | None,
    ) -> UploadResult:
        name = validate_filename(filename)
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
            recorded = await self._documents.find_idempotent(owner_id, idempotency_key)
            if recorded is not None:
                return await self._replay(recorded, chunks)
        document_id = uuid.uuid4()
        key = object_key(document_id)
        media_type = normalize_content_type(content_type, name)
        # TX1: one statement, committed on its own (one round trip, no BEGIN/COMMIT around it)
        pending = await self._documents.insert_pending(
            document_id=document_id, owner_id=owner_id, filename=name, content_type=media_type, object_key=key
        )
        structlog.contextvars.bind_contextvars(document_id=str(document_id))
        self._crash.reached("after_pending")
        try:
            blob = await self._blobs.put_stream(key, chunks, max_bytes=self._max_upload_bytes, content_type=media_type)
        except Exception:  # refused, too large, client gone, S3 down: never acknowledged
            await self._documents.discard_pending(document_id)
            raise
        self._crash.reached("after_object")
        try:
            # the unique index on (owner, sha256) of stored rows decides duplicates, races included
            document = await self._store(pending, blob, idempotency_key)
        except (Duplicate, IdempotencyKeyTaken):
            await self._documents.discard_pending(document_id)
            await self._blobs.delete(key)
            if idempotency_key is not None:  # a concurrent request with this key may have won the race
                recorded = await self._documents.find_idempotent(owner_id, idempotency_key)
                if recorded is not None:
                    log.info("upload.idempotency_race", document_id=str(recorded[1].id))
                    return self._compare(recorded, blob.sha256)
            log.info("upload.duplicate", sha256=blob.sha256)
            raise
        self._crash.reached("after_stored")
        log.info("upload.stored", size_bytes=blob.size_bytes, sha256=blob.sha256)
        return UploadResult(document)

    async def _store(self, pending: Document, blob: StoredBlob, idempotency_key: str | None) -> Document:
        """TX2: ``stored``, its event and the Idempotency-Key record, together or not at all.

        Without a key it is one statement on top of the row TX1 wrote (the version check stands in
        for the lock: a row expired or removed meanwhile is no longer that version).
        """
        if idempotency_key is None:
            stored = await self._documents.apply_alone(pending.store(blob))
            if stored is None:
                raise Gone("the upload expired before it completed", code="upload_expired")
            return stored
        async with self._uow() as uow:
            current = await uow.documents.lock(pending.id)
            if current is None or current.status is not Status.PENDING:
                raise Gone("the upload expired before it completed", code="upload_expired")
            document = await uow.apply(current.store(blob))
            if idempotency_key is not None:
                await uow.documents.record_idempotency(document.owner_id, idempotency_key, blob.sha256, document)
            await uow.commit()
        return document

    async def _replay(self, recorded: tuple[str, Document], chunks: AsyncIterator[bytes]) -> UploadResult:
        """Hash the retried body (storing nothing) and replay the first response if it matches."""
        digest, size = hashlib.sha256(), 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._max_upload_bytes:
                raise PayloadTooLarge(f"file exceeds the {self._max_upload_bytes}-byte limit")
            digest.update(chunk)
        return self._compare(recorded, digest.hexdigest())

    @staticmethod
    def _compare(recorded: tuple[str, Document], sha256: str) -> UploadResult:
        recorded_sha256, document = recorded
        if recorded_sha256 != sha256:
            raise Unprocessable(
                "this Idempotency-Key was already used for different content", code="idempotency_key_reused"
            )
        log.info("upload.replayed", document_id=str(document.id))
        return UploadResult(document, replayed=True)

    async def get(self, *, owner_id: str, document_id: uuid.UUID) -> Document:
        """The caller's document; another owner's is reported as not found."""
        document = await self._documents.get(owner_id, document_id)
        if document is None:
            raise NotFound("document not found")
        return document

    async def list_documents(self, *, owner_id: str, limit: int, after: PageCursor | None) -> Page:
        """The caller's documents, newest first, one keyset page at a time."""
        items = await self._documents.list_page(owner_id, limit=limit + 1, after=after)
        more = len(items) > limit
        items = items[:limit]
        cursor = PageCursor(items[-1].created_at, items[-1].id) if more else None
        return Page(items=items, next_cursor=cursor)

    async def open_content(self, *, owner_id: str, document_id: uuid.UUID) -> tuple[Document, AsyncIterator[bytes]]:
        """A stored document and a stream of its bytes, checked against the recorded size and SHA-256 as they pass.

        The stream never ends cleanly on bytes that are not the document's: see :func:`verified`.
        """
        document = await self._stored(owner_id, document_id)
        return document, verified(document, await self._blobs.open(document.object_key))

    async def download_url(self, *, owner_id: str, document_id: uuid.UUID) -> str:
        """A short-lived presigned GET URL of a stored document's bytes."""
        document = await self._stored(owner_id, document_id)
        return await self._blobs.presign_get(
            document.object_key,
            filename=document.filename,
            content_type=document.content_type,
            expires_in=self._download_url_ttl,
        )

    async def _stored(self, owner_id: str, document_id: uuid.UUID) -> Document:
        document = await self.get(owner_id=owner_id, document_id=document_id)
        if document.status != Status.STORED:
            raise NotFound(f"document is {document.status}, it has no content", code="no_content")
        return document

    async def delete(self, *, owner_id: str, document_id: uuid.UUID) -> None:
        """Delete a document: ``deleted`` + ``document.deleted`` commit first, then the bytes go."""
        async with self._uow() as uow:
            current = await uow.documents.lock(document_id)
            if current is None or current.owner_id != owner_id or current.status is Status.DELETED:
                raise NotFound("document not found")
            document = await uow.apply(current.delete())
            await uow.commit()
        self._crash.reached("after_delete_commit")
        metrics.DELETES.inc()
        log.info("document.deleted", document_id=str(document_id), version=document.version)
        await self._blobs.delete(document.object_key)  # a failure leaves an orphan the reconciler removes

    async def status(self, *, owner_id: str) -> OwnerStatus:
        return await self._documents.owner_status(owner_id)


class ContentMismatch(DepotError):
    """The stored bytes are not the ones recorded: the download is aborted (its status line has gone already)."""

    code = "content_mismatch"


async def verified(document: Document, chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on, re-hashing them, holding the last chunk back until the whole object matched.

    Bytes past the recorded size are never sent; at the end, a size or SHA-256 that differs
    from the record logs ``download.content_mismatch`` and raises ``ContentMismatch`` instead
    of sending the last chunk, so the client sees fewer bytes than ``Content-Length`` (a
    broken transfer), never a clean end.
    """
    expected_size = document.size_bytes or 0
    digest = hashlib.sha256()
    size = 0
    held = b""
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            size += len(chunk)
            if size > expected_size:
                _mismatch(document, size=size, sha256=None)
            digest.update(chunk)
            if held:
                yield held
            held = chunk
    actual = digest.hexdigest()
    if size != expected_size or actual != document.sha256:
        _mismatch(document, size=size, sha256=actual)
    if held:
        yield held


def _mismatch(document: Document, *, size: int, sha256: str | None) -> None:
    metrics.CONTENT_MISMATCHES.inc()
    log.error(
        "download.content_mismatch",
        document_id=str(document.id),
        object_key=document.object_key,
        expected_size=document.size_bytes,
        actual_size=size,
        expected_sha256=document.sha256,
        actual_sha256=sha256,
    )
    raise ContentMismatch(f"the stored bytes of document {document.id} do not match its recorded SHA-256")
