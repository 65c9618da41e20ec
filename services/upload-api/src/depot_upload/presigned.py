"""Presigned uploads (SPEC §4): the bytes go straight from the client to S3.

Imports nothing outward (no FastAPI, asyncpg or boto): the adapters are the Protocols
below, implemented by :mod:`depot_upload.sessions_repository` and
:mod:`depot_upload.presign_store`.

Life of an upload, crash-safe at every step::

    start     pending document + upload session (one TX); S3 multipart upload above one part
    (client)  PUTs the bytes to the presigned URLs
    complete  multipart assembled → object exists? → size and SHA-256 re-measured from S3
              → match: ``stored`` + ``document.stored`` outbox event (one TX)
              → mismatch: ``failed`` (TX committed) → object deleted
    abort     ``failed`` (TX committed) → multipart aborted → object deleted

A crash leaves a ``pending`` document past its TTL (the reconciler's ``stale_upload``) or
an object without a live document (``orphan_object``). Bytes are deleted only after the
transaction that stops referencing them has committed, and never while the document is
``stored``.

The session's ``expires_at`` is fixed when the upload starts (``now + upload_ttl``); a
repeated start of the same content returns the same upload with fresh URLs that expire
with it, so ``created_at + upload_ttl`` stays the deadline the reconciler checks.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from depot_common.errors import Conflict, DepotError, Duplicate, Gone, NotFound, PayloadTooLarge, Unprocessable
from depot_upload.domain import (
    Document,
    Status,
    StoredBlob,
    normalize_content_type,
    object_key,
    validate_filename,
)

log = structlog.get_logger(__name__)

#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Document states of an upload that completed (and may since have been deleted).
_COMPLETED = frozenset({Status.STORED, Status.DELETED})


class SessionStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class FailureReason(enum.StrEnum):
    ABORTED = "aborted"
    EXPIRED = "expired"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class UploadSession:
    """A presigned upload as stored, with its document's status and the time it has left."""

    id: uuid.UUID
    owner_id: str
    size_bytes: int
    sha256: str
    part_size: int
    multipart_upload_id: str | None
    status: SessionStatus
    failure_reason: str | None
    expires_at: datetime
    seconds_left: float
    document_status: Status

    @property
    def object_key(self) -> str:
        return object_key(self.id)

    @property
    def part_count(self) -> int:
        return parts_needed(self.size_bytes, self.part_size)

    @property
    def expired(self) -> bool:
        return self.seconds_left <= 0


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str


@dataclass(frozen=True)
class UploadTicket:
    """What a client needs to send the bytes: the upload and one URL per part."""

    session: UploadSession
    parts: list[PartUrl]
    created: bool
    """False when an existing live upload of the same content was returned."""


def parts_needed(size_bytes: int, part_size: int) -> int:
    return max(1, math.ceil(size_bytes / part_size))


# --- ports ---------------------------------------------------------------------------


class UploadSessions(Protocol):
    """Upload sessions and the pending documents they belong to (PostgreSQL)."""

    async def find_live(self, owner_id: str, sha256: str) -> UploadSession | None:
        """The owner's unexpired, pending upload of this content, if any."""

    async def create(
        self,
        *,
        document_id: uuid.UUID,
        owner_id: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        sha256: str,
        part_size: int,
        multipart_upload_id: str | None,
        ttl_seconds: int,
    ) -> tuple[UploadSession, bool]:
        """Insert a pending document and its session, atomically.

        Serialised per ``(owner_id, sha256)``: when a live upload of the content already
        exists, return it and ``False`` instead of inserting.
        """

    async def get(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession | None:
        """The owner's session (another owner's is ``None``)."""

    async def mark_failed(self, upload_id: uuid.UUID, reason: FailureReason) -> bool:
        """``pending`` → ``failed`` for document and session, with a ``document.failed`` event, in one TX.

        Returns False (and changes nothing) when the document was no longer ``pending``.
        """

    async def mark_completed(self, upload_id: uuid.UUID) -> None:
        """Record that the session's document was stored."""


class PresignStore(Protocol):
    """The S3 side of presigned uploads."""

    async def presign_put(self, key: str, *, expires_in: int) -> str: ...

    async def presign_part(self, key: str, multipart_upload_id: str, part_number: int, *, expires_in: int) -> str: ...

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        """Start an S3 multipart upload; return its id."""

    async def complete_multipart(self, key: str, multipart_upload_id: str, parts: Sequence[CompletedPart]) -> None:
        """Assemble the parts without overwriting an existing object.

        Raises ``Conflict`` (``not_uploaded``) when parts are missing or their ETags are
        wrong; returns quietly when the upload was already completed (a retry).
        """

    async def abort_multipart(self, key: str, multipart_upload_id: str) -> None:
        """Discard the uploaded parts; an unknown upload is not an error."""

    async def size_of(self, key: str) -> int | None:
        """The object's size, or ``None`` when there is no object."""

    async def measure(self, key: str) -> StoredBlob | None:
        """Size and SHA-256 of the object, streamed back from S3 (``None``: no object)."""

    async def delete(self, key: str) -> None:
        """Delete the object; a missing one is not an error."""


class StoredDocuments(Protocol):
    """The part of the document repository presigned uploads use (``PostgresDocuments``)."""

    async def mark_stored(self, document_id: uuid.UUID, blob: StoredBlob) -> Document:
        """``pending`` → ``stored`` plus the ``document.stored`` outbox event, atomically.

        Raises ``Duplicate`` when the owner already stored this content, ``Gone`` when
        the document is no longer ``pending``.
        """

    async def get(self, owner_id: str, document_id: uuid.UUID) -> Document | None: ...

    async def find_stored_by_sha256(self, owner_id: str, sha256: str) -> Document | None: ...


# --- use cases -----------------------------------------------------------------------


class PresignedUploads:
    def __init__(
        self,
        *,
        sessions: UploadSessions,
        store: PresignStore,
        documents: StoredDocuments,
        max_upload_bytes: int,
        part_size: int,
        ttl_seconds: int,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._documents = documents
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
        if size_bytes <= 0:
            raise Unprocessable("size_bytes must be a positive number of bytes", code="invalid_size")
        if size_bytes > self._max_upload_bytes:
            raise PayloadTooLarge(
                f"file exceeds the {self._max_upload_bytes}-byte limit", max_bytes=self._max_upload_bytes
            )
        if not _SHA256.match(sha256):
            raise Unprocessable("sha256 must be 64 lowercase hexadecimal digits", code="invalid_sha256")
        existing = await self._documents.find_stored_by_sha256(owner_id, sha256)
        if existing is not None:
            raise Duplicate("you already have a document with this content", existing_id=str(existing.id))

        live = await self._sessions.find_live(owner_id, sha256)
        if live is not None:
            return await self._ticket(live, created=False)

        document_id = uuid.uuid4()
        key = object_key(document_id)
        media_type = normalize_content_type(content_type, name)
        # S3 allows 10 000 parts: a file that needs more gets larger parts.
        part_size = max(self._part_size, math.ceil(size_bytes / MAX_PARTS))
        multipart_id = None
        if size_bytes > part_size:
            multipart_id = await self._store.create_multipart(key, content_type=media_type)
        try:
            session, created = await self._sessions.create(
                document_id=document_id,
                owner_id=owner_id,
                filename=name,
                content_type=media_type,
                size_bytes=size_bytes,
                sha256=sha256,
                part_size=part_size,
                multipart_upload_id=multipart_id,
                ttl_seconds=self._ttl,
            )
        except BaseException:
            if multipart_id is not None:
                await self._discard_multipart(key, multipart_id)
            raise
        if not created:  # lost the race to a concurrent start
            log.info("upload.start_race_lost", upload_id=str(session.id))
            if multipart_id is not None:
                await self._discard_multipart(key, multipart_id)
        return await self._ticket(session, created=created)

    async def _discard_multipart(self, key: str, multipart_id: str) -> None:
        """Abort a multipart upload no session refers to (best effort: it holds no object)."""
        try:
            await self._store.abort_multipart(key, multipart_id)
        except DepotError as error:
            log.warning("upload.abort_failed", key=key, error=error.message)

    async def _ticket(self, session: UploadSession, *, created: bool) -> UploadTicket:
        expires_in = max(1, min(self._ttl, math.ceil(session.seconds_left)))
        key = session.object_key
        if session.multipart_upload_id is None:
            parts = [PartUrl(1, await self._store.presign_put(key, expires_in=expires_in))]
        else:
            parts = [
                PartUrl(
                    number,
                    await self._store.presign_part(key, session.multipart_upload_id, number, expires_in=expires_in),
                )
                for number in range(1, session.part_count + 1)
            ]
        log.info(
            "upload.presigned",
            upload_id=str(session.id),
            size_bytes=session.size_bytes,
            parts=len(parts),
            multipart=session.multipart_upload_id is not None,
            reused=not created,
            expires_in=expires_in,
        )
        return UploadTicket(session=session, parts=parts, created=created)

    async def complete(self, *, owner_id: str, upload_id: uuid.UUID, parts: Sequence[CompletedPart]) -> Document:
        """Verify the uploaded object against the declaration and store the document.

        Idempotent: completing a completed upload returns its document. Raises ``NotFound``,
        ``Conflict`` (``not_uploaded``), ``Unprocessable`` (``checksum_mismatch``,
        ``parts_required``, ``invalid_parts``), ``Gone`` (``upload_expired``,
        ``upload_aborted``, ``upload_failed``) and ``Duplicate``.
        """
        session = await self._session(owner_id, upload_id)
        if session.document_status in _COMPLETED:
            return await self._document(owner_id, upload_id)
        if session.document_status is not Status.PENDING or session.status is not SessionStatus.PENDING:
            raise _gone(session)
        if session.expired:
            if not await self._fail(session, FailureReason.EXPIRED):
                return await self._document(owner_id, upload_id)
            raise _gone(session, FailureReason.EXPIRED)

        key = session.object_key
        if session.multipart_upload_id is not None:
            await self._store.complete_multipart(
                key, session.multipart_upload_id, _checked_parts(parts, session.part_count)
            )
        size = await self._store.size_of(key)
        if size is None:
            raise Conflict("nothing was uploaded to this upload's URL yet", code="not_uploaded")
        blob = StoredBlob(size_bytes=size, sha256="") if size != session.size_bytes else await self._store.measure(key)
        if blob is None:
            raise Conflict("nothing was uploaded to this upload's URL yet", code="not_uploaded")
        if blob.size_bytes != session.size_bytes or blob.sha256 != session.sha256:
            await self._reject(session, blob)

        try:
            document = await self._documents.mark_stored(upload_id, blob)
        except Duplicate:
            if await self._fail(session, FailureReason.DUPLICATE):
                log.info("upload.duplicate", upload_id=str(upload_id), sha256=blob.sha256)
            raise
        except Gone:  # aborted or completed concurrently: the row says who won
            if not await self._fail(session, FailureReason.ABORTED):
                return await self._document(owner_id, upload_id)
            raise _gone(await self._session(owner_id, upload_id)) from None
        await self._sessions.mark_completed(upload_id)
        log.info(
            "upload.completed",
            upload_id=str(upload_id),
            size_bytes=blob.size_bytes,
            sha256=blob.sha256,
            multipart=session.multipart_upload_id is not None,
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
        raise Unprocessable(
            "the uploaded bytes do not match the declared size and SHA-256; start a new upload",
            code="checksum_mismatch",
            expected_size=session.size_bytes,
            actual_size=blob.size_bytes,
            expected_sha256=session.sha256,
            actual_sha256=blob.sha256 or None,
        )

    async def abort(self, *, owner_id: str, upload_id: uuid.UUID) -> None:
        """Abandon the upload: ``failed``, parts aborted, any uploaded object removed.

        Idempotent for an upload that already failed. Raises ``NotFound`` and ``Conflict``
        (``upload_completed``: the document exists; delete it instead).
        """
        session = await self._session(owner_id, upload_id)
        if session.document_status in _COMPLETED or not await self._fail(session, FailureReason.ABORTED):
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
        failed_now = await self._sessions.mark_failed(session.id, reason)
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

    async def _session(self, owner_id: str, upload_id: uuid.UUID) -> UploadSession:
        session = await self._sessions.get(owner_id, upload_id)
        if session is None:
            raise NotFound("upload not found")
        return session

    async def _document(self, owner_id: str, document_id: uuid.UUID) -> Document:
        document = await self._documents.get(owner_id, document_id)
        if document is None:  # stored, then deleted by its owner
            raise NotFound("upload not found")
        return document


def _checked_parts(parts: Sequence[CompletedPart], part_count: int) -> list[CompletedPart]:
    """The client's parts in S3's order, or ``Unprocessable`` when they cannot be right."""
    if not parts:
        raise Unprocessable(
            f"this is a multipart upload: list its {part_count} parts with their ETags", code="parts_required"
        )
    numbers = [part.part_number for part in parts]
    if len(set(numbers)) != len(numbers) or not all(1 <= number <= part_count for number in numbers):
        raise Unprocessable(f"part numbers must be distinct and between 1 and {part_count}", code="invalid_parts")
    if not all(part.etag.strip() for part in parts):
        raise Unprocessable("every part needs the ETag S3 returned for it", code="invalid_parts")
    return sorted(parts, key=lambda part: part.part_number)


def _gone(session: UploadSession, reason: str | None = None) -> Gone:
    """The 410 for an upload that can never complete, named after why."""
    reason = reason or session.failure_reason or (FailureReason.EXPIRED if session.expired else FailureReason.ABORTED)
    if reason == FailureReason.EXPIRED:
        return Gone("the upload expired before it completed; start a new upload", code="upload_expired")
    if reason == FailureReason.ABORTED:
        return Gone("the upload was aborted; start a new upload", code="upload_aborted")
    return Gone("the upload failed; start a new upload", code="upload_failed", reason=reason)
