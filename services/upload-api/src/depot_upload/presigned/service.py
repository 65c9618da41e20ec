"""Presigned uploads (docs/api.md): the bytes go straight from the client to S3.

This module starts and resumes uploads (it issues the URLs); :mod:`.completion` completes
and aborts them.

Imports nothing outward (no FastAPI, asyncpg or boto): the adapters are the Protocols
of :mod:`depot_upload.presigned.ports`, implemented by :mod:`.repository` and
:mod:`.storage`; the types and rules are in :mod:`.domain`.

Life of an upload, crash-safe at every step::

    start     pending document + upload session (one unit of work, committed); above one part, then
              the S3 multipart upload is created and its id recorded (a crash between leaves a
              ``pending`` document: no S3 upload exists without a row naming its key)
    (client)  PUTs the bytes to the presigned URLs
    complete  multipart assembled → object exists? → size and SHA-256 re-measured from S3
              → match: ``stored`` + ``document.stored`` outbox event + session completed (one unit of work)
              → mismatch: ``failed`` + ``document.failed`` (committed) → object deleted
    resume    the parts S3 already holds (ListParts) and fresh URLs for the others
    abort     ``failed`` + ``document.failed`` (committed) → multipart aborted → object deleted

A crash leaves a ``pending`` document past its TTL (the reconciler's ``stale_upload``) or
an object without a live document (``orphan_object``). Bytes are deleted only after the
transaction that stops referencing them has committed, and never while the document is
``stored``.

The session's ``expires_at`` is fixed when the upload starts (``now + upload_ttl``); a
repeated start of the same content returns the same upload with fresh URLs that expire
with it, so ``created_at + upload_ttl`` stays the deadline the reconciler checks.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import structlog

from depot_common.errors import DepotError, Duplicate, Gone, NotFound
from depot_upload.domain import (
    Status,
    normalize_content_type,
    object_key,
    validate_filename,
)
from depot_upload.faults import CrashPoints
from depot_upload.presigned.domain import (
    COMPLETED,
    FailureReason,
    PartUrl,
    SessionStatus,
    UploadProgress,
    UploadSession,
    UploadTicket,
    check_declaration,
    gone,
    part_size_for,
)
from depot_upload.presigned.ports import PresignStore, StoredDocuments, UploadSessions
from depot_upload.unit_of_work import UnitOfWorkFactory

log = structlog.get_logger(__name__)


class PresignedUploads:
    def __init__(
        self,
        *,
        sessions: UploadSessions,
        store: PresignStore,
        documents: StoredDocuments,
        uow: UnitOfWorkFactory,
        max_upload_bytes: int,
        part_size: int,
        ttl_seconds: int,
        crash_points: CrashPoints | None = None,
    ) -> None:
        self._crash = crash_points or CrashPoints()
        self._sessions = sessions
        self._store = store
        self._documents = documents
        self._uow = uow
        self._max_upload_bytes = max_upload_bytes
        self._part_size = part_size
        self._ttl = ttl_seconds

    async def start(
        self, *, owner_id: str, filename: str, size_bytes: int, sha256: str, content_type: str | None
    ) -> UploadTicket:
        """A new upload (``created``), or the owner's live upload of the same content.

        Raises ``InvalidFilename``, ``PayloadTooLarge``, ``Unprocessable`` (``invalid_size``,
        ``invalid_sha256``) and ``Duplicate`` (the owner already stored this content).
        """
        name = validate_filename(filename)
        check_declaration(size_bytes=size_bytes, sha256=sha256, max_bytes=self._max_upload_bytes)
        existing = await self._documents.find_stored_by_sha256(owner_id, sha256)
        if existing is not None:
            raise Duplicate("you already have a document with this content", existing_id=str(existing.id))

        live = await self._sessions.find_live(owner_id, sha256)
        if live is not None:
            return await self._ticket(await self._ensure_multipart(live), created=False)

        document_id = uuid.uuid4()
        media_type = normalize_content_type(content_type, name)
        async with self._uow() as uow:
            await uow.sessions.lock_content(owner_id, sha256)  # concurrent starts share one upload
            session = await uow.sessions.find_live(owner_id, sha256)
            created = session is None
            if session is None:
                await uow.documents.insert_pending(
                    document_id=document_id,
                    owner_id=owner_id,
                    filename=name,
                    content_type=media_type,
                    object_key=object_key(document_id),
                )
                session = await uow.sessions.insert(
                    document_id=document_id,
                    owner_id=owner_id,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    part_size=part_size_for(size_bytes, self._part_size),
                    ttl_seconds=self._ttl,
                )
            await uow.commit()
        if not created:  # lost the race to a concurrent start
            log.info("upload.start_race_lost", upload_id=str(session.id))
        self._crash.reached("after_session")
        session = await self._ensure_multipart(session, content_type=media_type)
        return await self._ticket(session, created=created)

    async def _ensure_multipart(self, session: UploadSession, *, content_type: str | None = None) -> UploadSession:
        """The session with its S3 multipart upload, created and recorded now if it has none yet.

        The session row is committed before S3 is asked, so no multipart upload exists without a
        record of its key: a crash before the id is recorded leaves a ``pending`` document whose
        multipart upload the reconciler's ``abandoned_multipart`` finds past TTL plus grace (and its
        ``stale_upload`` fails the document). Starts racing on one session record one id; the
        others abort theirs.
        """
        if not session.multipart or session.multipart_upload_id is not None:
            return session
        key = session.object_key
        if content_type is None:
            document = await self._documents.get(session.owner_id, session.id)
            content_type = document.content_type if document else "application/octet-stream"
        multipart_id = await self._store.create_multipart(key, content_type=content_type)
        self._crash.reached("after_multipart_created")
        try:
            recorded = await self._sessions.record_multipart(session.id, multipart_id)
        except BaseException:
            await self._discard_multipart(key, multipart_id)
            raise
        if not recorded:  # another start recorded its upload first, or the upload ended meanwhile
            log.info("upload.multipart_race_lost", upload_id=str(session.id))
            await self._discard_multipart(key, multipart_id)
        current = await owned_session(self._sessions, session.owner_id, session.id)
        if current.multipart_upload_id is None:
            raise gone(current)
        return current

    async def _discard_multipart(self, key: str, multipart_id: str) -> None:
        """Abort a multipart upload no session refers to (best effort: it holds no object)."""
        try:
            await self._store.abort_multipart(key, multipart_id)
        except DepotError as error:
            log.warning("upload.abort_failed", key=key, error=error.message)

    async def _part_urls(self, session: UploadSession, numbers: Sequence[int]) -> list[PartUrl]:
        """Presigned URLs of these parts, expiring with the upload."""
        expires_in = max(1, min(self._ttl, math.ceil(session.seconds_left)))
        key = session.object_key
        if not session.multipart:
            return [await self._store.presign_put(key, sha256=session.sha256, expires_in=expires_in) for _ in numbers]
        multipart_id = session.multipart_upload_id
        assert multipart_id is not None, "the caller ensured the multipart upload"
        return [await self._store.presign_part(key, multipart_id, number, expires_in=expires_in) for number in numbers]

    async def _ticket(self, session: UploadSession, *, created: bool) -> UploadTicket:
        parts = await self._part_urls(session, range(1, session.part_count + 1))
        expires_in = max(1, min(self._ttl, math.ceil(session.seconds_left)))
        log.info(
            "upload.presigned",
            upload_id=str(session.id),
            size_bytes=session.size_bytes,
            parts=len(parts),
            multipart=session.multipart,
            reused=not created,
            expires_in=expires_in,
        )
        return UploadTicket(session=session, parts=parts, created=created)

    async def resume(self, *, owner_id: str, upload_id: uuid.UUID) -> UploadProgress:
        """The parts S3 already holds and fresh URLs for the others, so any client can carry on.

        A part S3 holds with the wrong size is offered again. A completed upload has nothing
        left to send. Changes nothing. Raises ``NotFound`` and ``Gone`` (``upload_expired``,
        ``upload_aborted``, ``upload_failed``: the upload can never complete).
        """
        session = await owned_session(self._sessions, owner_id, upload_id)
        if session.document_status in COMPLETED:
            return UploadProgress(session, completed=True, received=[], parts=[])
        if session.document_status is not Status.PENDING or session.status is not SessionStatus.PENDING:
            raise gone(session)
        if session.expired:
            raise gone(session, FailureReason.EXPIRED)
        session = await self._ensure_multipart(session)  # its start crashed before S3 created it
        held = await self._store.received_parts(session.object_key, session.multipart_upload_id)
        if held is None:  # completed meanwhile, or aborted behind Depot's back
            session = await owned_session(self._sessions, owner_id, upload_id)
            if session.document_status in COMPLETED:
                return UploadProgress(session, completed=True, received=[], parts=[])
            raise Gone("the upload's parts are gone from storage; start a new upload", code="upload_failed")
        received = sorted(
            (part for part in held if 1 <= part.part_number <= session.part_count),
            key=lambda part: part.part_number,
        )
        received = [part for part in received if part.size == session.part_bytes(part.part_number)]
        have = {part.part_number for part in received}
        missing = [number for number in range(1, session.part_count + 1) if number not in have]
        parts = await self._part_urls(session, missing)
        log.info("upload.resumed", upload_id=str(upload_id), parts_received=len(received), parts_missing=len(missing))
        return UploadProgress(session, completed=False, received=received, parts=parts)


async def owned_session(sessions: UploadSessions, owner_id: str, upload_id: uuid.UUID) -> UploadSession:
    """The owner's upload session; ``NotFound`` for an unknown one or another owner's."""
    session = await sessions.get(owner_id, upload_id)
    if session is None:
        raise NotFound("upload not found")
    return session
