"""upload-api's compensation worker (docs/reconciler.md): executes what the reconciler planned.

Handles the ``depot.compensations.v1`` types upload-api owns — ``orphan_object``,
``missing_blob``, ``content_mismatch``, ``stale_upload`` and ``abandoned_multipart`` — each
re-checking the row and the object at the moment it acts, so a finding that changed since
the scan is skipped, and a repeated event is harmless. Imports nothing outward (no FastAPI,
aiokafka or boto): the adapters are the Protocols of :mod:`depot_upload.compensations.ports`,
implemented by :mod:`.repository` and :mod:`.storage`.

Each handler runs its own unit of work (``async with uow``): the document's transition and
its outbox event commit together, and bytes are deleted only after that commit. The
consumer's connection (``_inbox``) only records the event id; a crash between the two
commits redelivers the event, which the re-check then turns into a no-op.

* ``orphan_object``: an object under ``documents/`` with no live (``pending`` or
  ``stored``) document is copied to ``quarantine/<key>``, recorded (committed), and only then deleted;
  :meth:`Compensations.purge_quarantine` deletes quarantined objects older than the
  retention. Never deleted on sight, never touched while a live row claims the key.
* ``missing_blob``: a document still ``stored`` whose object is still absent or of the
  wrong size becomes ``failed`` (version + 1) with a ``document.failed`` event
  (``blob_lost``) in one unit of work; a wrong-size object is quarantined, not deleted.
* ``content_mismatch``: a document still ``stored`` whose object, read back in bounded chunks
  and hashed now, still differs from its recorded size and SHA-256 becomes ``failed`` (version
  + 1) with a ``document.failed`` event (``content_mismatch``), and its object is quarantined
  (copied and recorded in that unit of work, deleted after the commit). The object is hashed
  before the row is locked, so no transaction stays open for the read; an object gone by
  then is ``missing_blob``'s to repair.
* ``stale_upload``: a document still ``pending`` past its TTL is finalized when its bytes
  are there and match the size and SHA-256 declared for its presigned upload; otherwise
  it is marked ``failed`` (``upload_expired``, committed first) and then its multipart
  parts are aborted and its object deleted. A synchronous upload declared no hash, so its
  bytes cannot be verified: the client never got a 201 and has no claim on them, so it is
  failed too (finalizing it would invent a document nobody acknowledged, possibly a
  duplicate of the client's retry).
* ``abandoned_multipart``: an S3 multipart upload under ``documents/`` that no live upload
  claims (no ``pending`` session with its id, no ``pending`` document of the key within its
  TTL) is aborted; the reconciler's audit trail records the order, this worker logs
  ``compensation.multipart_aborted``. Aborting an upload S3 no longer has is a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel

from depot_common.db import Connection
from depot_common.errors import Duplicate
from depot_common.events import (
    AbandonedMultipart,
    CloudEvent,
    ContentMismatch,
    MissingBlob,
    OrphanObject,
    StaleUpload,
    handler_table,
)
from depot_upload.compensations.ports import ObjectStore, UploadState
from depot_upload.domain import Status, StoredBlob
from depot_upload.presigned.completion import fail_upload, store_upload
from depot_upload.presigned.domain import FailureReason
from depot_upload.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = structlog.get_logger(__name__)

QUARANTINE_PREFIX = "quarantine/"
#: ``document.failed`` reason of a document whose stored bytes no longer hash to its SHA-256.
CONTENT_MISMATCH = "content_mismatch"


def quarantine_key(key: str) -> str:
    return QUARANTINE_PREFIX + key


Handler = Any  # (Connection, CloudEvent[Any]) -> Awaitable[None], as depot_common.consumer expects


class Compensations:
    """The handlers and the quarantine purge, over units of work and an object store."""

    def __init__(
        self, uow: UnitOfWorkFactory, objects: ObjectStore, *, quarantine_retention: int, upload_ttl: int
    ) -> None:
        self._uow = uow
        self._objects = objects
        self._retention = quarantine_retention
        self._upload_ttl = upload_ttl

    def handlers(self) -> Mapping[str, tuple[type[BaseModel], Handler]]:
        """The handler map for :class:`depot_common.consumer.EventConsumer`."""
        return handler_table(
            {
                OrphanObject: self.orphan_object,
                MissingBlob: self.missing_blob,
                ContentMismatch: self.content_mismatch,
                StaleUpload: self.stale_upload,
                AbandonedMultipart: self.abandoned_multipart,
            }
        )

    async def orphan_object(self, _inbox: Connection, event: CloudEvent[OrphanObject]) -> None:
        """Quarantine an object no live document claims: copy, record (committed), then delete."""
        key = event.data.object_key
        if not key.startswith("documents/"):
            log.warning("compensation.orphan_object.refused", object_key=key, reason="not under documents/")
            return
        async with self._uow() as uow:
            if await uow.compensations.live_document_owns(key):
                log.info("compensation.skipped", object_key=key, reason="a live document owns the object")
                return
            size = await self._objects.size_of(key)
            if size is None:
                log.info("compensation.skipped", object_key=key, reason="the object is gone")
                return
            if not await self._copy_to_quarantine(uow, key, size, event.data.run_id):
                return
            await uow.commit()
        await self._objects.delete(key)
        log.info("compensation.orphan_quarantined", object_key=key, size_bytes=size)

    async def _copy_to_quarantine(self, uow: UnitOfWork, key: str, size: int, run_id: uuid.UUID) -> bool:
        """Copy the object to ``quarantine/`` and record it in ``uow``; the caller deletes the original after commit."""
        target = quarantine_key(key)
        if not await self._objects.copy(key, target):
            return False
        await uow.compensations.record_quarantine(
            key=key, quarantined=target, size_bytes=size, retention_s=self._retention, run_id=run_id
        )
        return True

    async def missing_blob(self, _inbox: Connection, event: CloudEvent[MissingBlob]) -> None:
        """Fail a ``stored`` document whose object is still absent or of the wrong size (``blob_lost``)."""
        document_id = event.data.document_id
        async with self._uow() as uow:
            document = await uow.documents.lock(document_id)
            if document is None or document.status is not Status.STORED or document.object_key != event.data.object_key:
                log.info("compensation.skipped", document_id=str(document_id), reason="document is no longer stored")
                return
            key = document.object_key
            size = await self._objects.size_of(key)
            if size is not None and size == document.size_bytes:
                log.info("compensation.skipped", document_id=str(document_id), reason="the object is back")
                return
            await uow.apply(document.fail("blob_lost"))
            # wrong size: not this document's bytes any more, but kept for inspection
            quarantined = size is not None and await self._copy_to_quarantine(uow, key, size, event.data.run_id)
            await uow.commit()
        if quarantined:
            await self._objects.delete(key)
        log.warning("compensation.blob_lost", document_id=str(document_id), object_size=size)

    async def content_mismatch(self, _inbox: Connection, event: CloudEvent[ContentMismatch]) -> None:
        """Fail a ``stored`` document whose object still hashes to other bytes, and quarantine the object."""
        document_id, key = event.data.document_id, event.data.object_key
        measured = await self._objects.measure(key)  # streamed, before any row is locked
        if measured is None:
            log.info("compensation.skipped", document_id=str(document_id), reason="the object is gone")
            return
        async with self._uow() as uow:
            document = await uow.documents.lock(document_id)
            if document is None or document.status is not Status.STORED or document.object_key != key:
                log.info("compensation.skipped", document_id=str(document_id), reason="document is no longer stored")
                return
            if measured == StoredBlob(size_bytes=document.size_bytes or 0, sha256=document.sha256 or ""):
                log.info("compensation.skipped", document_id=str(document_id), reason="the object matches again")
                return
            await uow.apply(document.fail(CONTENT_MISMATCH))
            quarantined = await self._copy_to_quarantine(uow, key, measured.size_bytes, event.data.run_id)
            await uow.commit()
        if quarantined:
            await self._objects.delete(key)
        log.warning(
            "compensation.content_mismatch",
            document_id=str(document_id),
            object_key=key,
            expected_sha256=document.sha256,
            actual_sha256=measured.sha256,
            quarantined=quarantined,
            run_id=str(event.data.run_id),
        )

    async def stale_upload(self, _inbox: Connection, event: CloudEvent[StaleUpload]) -> None:
        """Finalize an expired ``pending`` upload whose bytes match its declaration; else fail it, free the bytes."""
        document_id = event.data.document_id
        async with self._uow() as uow:  # a read: nothing to commit
            upload = await uow.compensations.upload_state(document_id, upload_ttl=self._upload_ttl)
        if upload is None or upload.status != "pending":
            if upload is not None and upload.status == "failed":
                # failed already (maybe by an attempt that crashed before cleaning up): release again
                await self._release(upload)
            log.info("compensation.skipped", document_id=str(document_id), reason="document is no longer pending")
            return
        if not upload.expired:
            log.info("compensation.skipped", document_id=str(document_id), reason="upload is within its TTL")
            return
        if upload.declared is not None and await self._bytes_match(upload.object_key, upload.declared):
            if await self._finalize(document_id, upload.declared):
                if upload.multipart_upload_id is not None:  # leftover parts, if any; the object is complete
                    await self._objects.abort_multipart(upload.object_key, upload.multipart_upload_id)
                log.info("compensation.upload_finalized", document_id=str(document_id))
                return
            if await self._status(document_id) is not Status.FAILED:  # completed meanwhile
                log.info("compensation.skipped", document_id=str(document_id), reason="document changed")
                return
        elif not await self._fail(document_id, FailureReason.EXPIRED):
            log.info("compensation.skipped", document_id=str(document_id), reason="document changed")
            return
        await self._release(upload)
        log.info("compensation.upload_failed", document_id=str(document_id), reason="upload_expired")

    async def abandoned_multipart(self, _inbox: Connection, event: CloudEvent[AbandonedMultipart]) -> None:
        """Abort an S3 multipart upload no live upload claims, so S3 stops keeping its parts."""
        key, upload_id = event.data.object_key, event.data.upload_id
        if not key.startswith("documents/"):
            log.warning("compensation.abandoned_multipart.refused", object_key=key, reason="not under documents/")
            return
        async with self._uow() as uow:  # a read: nothing to commit
            claimed = await uow.compensations.multipart_claimed(key, upload_id, upload_ttl=self._upload_ttl)
        if claimed:
            log.info("compensation.skipped", object_key=key, upload_id=upload_id, reason="a live upload claims it")
            return
        await self._objects.abort_multipart(key, upload_id)
        log.info(
            "compensation.multipart_aborted",
            object_key=key,
            upload_id=upload_id,
            initiated=event.data.initiated.isoformat(),
            run_id=str(event.data.run_id),
        )

    async def _finalize(self, document_id: uuid.UUID, blob: StoredBlob) -> bool:
        """``pending`` → ``stored`` (committed); False when no longer pending or a duplicate (then failed)."""
        try:
            async with self._uow() as uow:
                document = await store_upload(uow, document_id, blob)
                await uow.commit()
        except Duplicate:  # the owner stored this content meanwhile: this upload is not needed
            await self._fail(document_id, FailureReason.DUPLICATE)
            return False
        return document is not None

    async def _fail(self, document_id: uuid.UUID, reason: FailureReason) -> bool:
        async with self._uow() as uow:
            failed = await fail_upload(uow, document_id, reason)
            await uow.commit()
        return failed

    async def _status(self, document_id: uuid.UUID) -> Status | None:
        async with self._uow() as uow:  # a read: nothing to commit
            document = await uow.documents.lock(document_id)
        return document.status if document else None

    async def _bytes_match(self, key: str, declared: StoredBlob) -> bool:
        if await self._objects.size_of(key) != declared.size_bytes:
            return False
        return await self._objects.measure(key) == declared

    async def _release(self, upload: UploadState) -> None:
        """Abort the parts and delete the bytes of an upload whose ``failed`` state is committed."""
        if upload.multipart_upload_id is not None:
            await self._objects.abort_multipart(upload.object_key, upload.multipart_upload_id)
        await self._objects.delete(upload.object_key)

    async def purge_quarantine(self, *, now: datetime | None = None) -> int:
        """Delete quarantined objects older than the retention; return how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self._retention)
        keys = await self._objects.keys_older_than(QUARANTINE_PREFIX, cutoff)
        for key in keys:
            await self._objects.delete(key)
            async with self._uow() as uow:
                await uow.compensations.mark_purged(key)
                await uow.commit()
        if keys:
            log.info("quarantine.purged", objects=len(keys))
        return len(keys)
