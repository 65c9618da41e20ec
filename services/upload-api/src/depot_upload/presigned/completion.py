"""Completing and aborting presigned uploads: the bytes are verified, then the document is stored or failed.

Imports nothing outward (no FastAPI, asyncpg or boto)::

    complete  multipart assembled → object exists? → size and SHA-256 re-measured from S3
              → match: ``stored`` + ``document.stored`` outbox event + session completed (one unit of work)
              → mismatch: ``failed`` + ``document.failed`` (committed) → object deleted
    abort     ``failed`` + ``document.failed`` (committed) → multipart aborted → object deleted

Concurrent requests race on the document row: the unit of work that finds it still
``pending`` wins; the loser reads what the winner left (stored: return the document, never
delete its bytes; failed: 410). :func:`store_upload` and :func:`fail_upload` are the two
transitions, shared with the compensation worker's ``stale_upload``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from depot_common.errors import Conflict, Duplicate, NotFound
from depot_upload.domain import Document, Status, StoredBlob
from depot_upload.presigned.domain import (
    COMPLETED,
    CompletedPart,
    FailureReason,
    SessionStatus,
    UploadSession,
    checked_parts,
    checksum_mismatch,
    gone,
    matches,
)
from depot_upload.presigned.ports import PresignStore, StoredDocuments, UploadSessions
from depot_upload.presigned.service import owned_session
from depot_upload.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger(__name__)


class UploadCompletion:
    def __init__(
        self, *, sessions: UploadSessions, store: PresignStore, documents: StoredDocuments, uow: UnitOfWorkFactory
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._documents = documents
        self._uow = uow

    async def complete(self, *, owner_id: str, upload_id: uuid.UUID, parts: Sequence[CompletedPart]) -> Document:
        """Verify the uploaded object against the declaration and store the document.

        Idempotent: completing a completed upload returns its document. Raises ``NotFound``,
        ``Conflict`` (``not_uploaded``), ``Unprocessable`` (``checksum_mismatch``,
        ``parts_required``, ``invalid_parts``), ``Gone`` (``upload_expired``,
        ``upload_aborted``, ``upload_failed``) and ``Duplicate``.
        """
        session = await owned_session(self._sessions, owner_id, upload_id)
        if session.document_status in COMPLETED:
            return await self._document(owner_id, upload_id)
        if session.document_status is not Status.PENDING or session.status is not SessionStatus.PENDING:
            # a plain presigned PUT cannot be revoked: bytes sent after the upload failed are removed here
            await self._fail(session, FailureReason.ABORTED)
            raise gone(session)
        if session.expired:
            if not await self._fail(session, FailureReason.EXPIRED):
                return await self._document(owner_id, upload_id)
            raise gone(session, FailureReason.EXPIRED)

        key = session.object_key
        if session.multipart:
            if session.multipart_upload_id is None:  # its start crashed before S3 created the upload
                raise Conflict("nothing was uploaded to this upload yet", code="not_uploaded")
            await self._store.complete_multipart(
                key, session.multipart_upload_id, checked_parts(parts, session.part_count)
            )
        size = await self._store.size_of(key)
        if size is None:
            raise Conflict("nothing was uploaded to this upload's URL yet", code="not_uploaded")
        blob = StoredBlob(size_bytes=size, sha256="") if size != session.size_bytes else await self._store.measure(key)
        if blob is None:
            raise Conflict("nothing was uploaded to this upload's URL yet", code="not_uploaded")
        if not matches(session, blob):
            await self._reject(session, blob)

        try:
            async with self._uow() as uow:
                document = await store_upload(uow, upload_id, blob)
                await uow.commit()
        except Duplicate:
            if await self._fail(session, FailureReason.DUPLICATE):
                log.info("upload.duplicate", upload_id=str(upload_id), sha256=blob.sha256)
            raise
        if document is None:  # aborted or completed concurrently: the row says who won
            if not await self._fail(session, FailureReason.ABORTED):
                return await self._document(owner_id, upload_id)
            raise gone(await owned_session(self._sessions, owner_id, upload_id))
        log.info(
            "upload.completed",
            upload_id=str(upload_id),
            size_bytes=blob.size_bytes,
            sha256=blob.sha256,
            multipart=session.multipart,
        )
        return document

    async def _reject(self, session: UploadSession, blob: StoredBlob) -> None:
        """Fail the upload whose bytes do not match the declaration, then remove them."""
        await self._fail(session, FailureReason.CHECKSUM_MISMATCH)
        log.warning(
            "upload.checksum_mismatch",
            upload_id=str(session.id),
            expected_size=session.size_bytes,
            actual_size=blob.size_bytes,
            expected_sha256=session.sha256,
            actual_sha256=blob.sha256 or None,
        )
        raise checksum_mismatch(session, blob)

    async def abort(self, *, owner_id: str, upload_id: uuid.UUID) -> None:
        """Abandon the upload: ``failed``, parts aborted, any uploaded object removed.

        Idempotent for an upload that already failed. Raises ``NotFound`` and ``Conflict``
        (``upload_completed``: the document exists; delete it instead).
        """
        session = await owned_session(self._sessions, owner_id, upload_id)
        if session.document_status in COMPLETED or not await self._fail(session, FailureReason.ABORTED):
            error = Conflict(
                "this upload completed; delete the document instead",
                code="upload_completed",
                document_id=str(upload_id),
            )
            error.headers["Location"] = f"/v1/documents/{upload_id}"
            raise error

    async def _fail(self, session: UploadSession, reason: FailureReason) -> bool:
        """Mark the upload failed (committed first), then release its S3 resources.

        An upload that had already failed is cleaned again (a retry after a crash). Returns
        False, touching nothing in S3, when the document was stored meanwhile.
        """
        async with self._uow() as uow:
            failed_now = await fail_upload(uow, session.id, reason)
            await uow.commit()
        if not failed_now:
            current = await self._sessions.get(session.owner_id, session.id)
            if current is None or current.document_status is not Status.FAILED:
                return False
        if session.multipart_upload_id is not None:
            await self._store.abort_multipart(session.object_key, session.multipart_upload_id)
        await self._store.delete(session.object_key)
        if failed_now:
            log.info("upload.aborted", upload_id=str(session.id), reason=str(reason))
        return True

    async def _document(self, owner_id: str, document_id: uuid.UUID) -> Document:
        document = await self._documents.get(owner_id, document_id)
        if document is None:  # stored, then deleted by its owner
            raise NotFound("upload not found")
        return document


async def store_upload(uow: UnitOfWork, upload_id: uuid.UUID, blob: StoredBlob) -> Document | None:
    """In ``uow``: ``pending`` → ``stored`` (with its event) and the session completed.

    ``None`` when the document is no longer ``pending``; ``Duplicate`` when the owner
    stored this content meanwhile.
    """
    pending = await uow.documents.lock(upload_id)
    if pending is None or pending.status is not Status.PENDING:
        return None
    document = await uow.apply(pending.store(blob))
    await uow.sessions.mark_completed(upload_id)
    return document


async def fail_upload(uow: UnitOfWork, upload_id: uuid.UUID, reason: FailureReason) -> bool:
    """In ``uow``: ``pending`` → ``failed`` (``document.failed``, ``upload_<reason>``) and the session's reason.

    False, changing nothing, when the document is no longer ``pending``.
    """
    pending = await uow.documents.lock(upload_id)
    if pending is None or pending.status is not Status.PENDING:
        return False
    await uow.apply(pending.fail(f"upload_{reason}"))
    await uow.sessions.mark_failed(upload_id, reason)
    return True
