"""upload-api's compensation worker (SPEC §7): executes what the reconciler planned.

Handles the ``depot.compensations.v1`` types upload-api owns — ``orphan_object``,
``missing_blob`` and ``stale_upload`` — each re-checking the row and the object at the
moment it acts, so a finding that changed since the scan is skipped, and a repeated
event is harmless. Imports nothing outward (no FastAPI, aiokafka or boto): the adapters
are the Protocols of :mod:`depot_upload.compensations.ports`, implemented by
:mod:`.repository` and :mod:`.storage`.

* ``orphan_object``: an object under ``documents/`` with no live (``pending`` or
  ``stored``) document is copied to ``quarantine/<key>``, recorded, and only then deleted;
  :meth:`Compensations.purge_quarantine` deletes quarantined objects older than the
  retention. Never deleted on sight, never touched while a live row claims the key.
* ``missing_blob``: a document still ``stored`` whose object is still absent or of the
  wrong size becomes ``failed`` (version + 1) with a ``document.failed`` event
  (``blob_lost``) in the same transaction; a wrong-size object is quarantined, not deleted.
* ``stale_upload``: a document still ``pending`` past its TTL is finalized when its bytes
  are there and match the size and SHA-256 declared for its presigned upload; otherwise
  it is marked ``failed`` (``upload_expired``, committed first) and then its multipart
  parts are aborted and its object deleted. A synchronous upload declared no hash, so its
  bytes cannot be verified: the client never got a 201 and has no claim on them, so it is
  failed too (finalizing it would invent a document nobody acknowledged, possibly a
  duplicate of the client's retry).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel

from depot_common.db import Connection
from depot_common.events import CloudEvent, MissingBlob, OrphanObject, StaleUpload
from depot_upload.compensations.ports import CompensationRecords, ObjectStore, UploadState
from depot_upload.domain import StoredBlob

log = structlog.get_logger(__name__)

QUARANTINE_PREFIX = "quarantine/"
#: The compensation types the indexer executes: upload-api's worker skips them.
INDEXER_TYPES = frozenset({"compensation.reindex", "compensation.ghost_index_entry"})
#: The types this worker executes.
HANDLED_TYPES = frozenset({"compensation.orphan_object", "compensation.missing_blob", "compensation.stale_upload"})


def quarantine_key(key: str) -> str:
    return QUARANTINE_PREFIX + key


Handler = Any  # (Connection, CloudEvent[Any]) -> Awaitable[None], as depot_common.consumer expects


class Compensations:
    """The three handlers and the quarantine purge, over a record store and an object store."""

    def __init__(self, records: CompensationRecords, objects: ObjectStore, *, quarantine_retention: int) -> None:
        self._records = records
        self._objects = objects
        self._retention = quarantine_retention

    def handlers(self) -> Mapping[str, tuple[type[BaseModel], Handler]]:
        """The handler map for :class:`depot_common.consumer.EventConsumer`."""
        return {
            "compensation.orphan_object": (OrphanObject, self.orphan_object),
            "compensation.missing_blob": (MissingBlob, self.missing_blob),
            "compensation.stale_upload": (StaleUpload, self.stale_upload),
        }

    async def orphan_object(self, conn: Connection, event: CloudEvent[OrphanObject]) -> None:
        key = event.data.object_key
        if not key.startswith("documents/"):
            log.warning("compensation.orphan_object.refused", object_key=key, reason="not under documents/")
            return
        if await self._records.live_document_owns(conn, key):
            log.info("compensation.skipped", object_key=key, reason="a live document owns the object")
            return
        size = await self._objects.size_of(key)
        if size is None:
            log.info("compensation.skipped", object_key=key, reason="the object is gone")
            return
        if await self._quarantine(conn, key, size, event.data.run_id):
            log.info("compensation.orphan_quarantined", object_key=key, size_bytes=size)

    async def _quarantine(self, conn: Connection, key: str, size: int, run_id: uuid.UUID) -> bool:
        """Copy, record, then delete the original: never delete before the copy exists."""
        target = quarantine_key(key)
        if not await self._objects.copy(key, target):
            return False
        await self._records.record_quarantine(
            conn, key=key, quarantined=target, size_bytes=size, retention_s=self._retention, run_id=run_id
        )
        await self._objects.delete(key)
        return True

    async def missing_blob(self, conn: Connection, event: CloudEvent[MissingBlob]) -> None:
        document_id = event.data.document_id
        row = await self._records.lock_document(conn, document_id)
        if row is None or row.status != "stored" or row.object_key != event.data.object_key:
            log.info("compensation.skipped", document_id=str(document_id), reason="document is no longer stored")
            return
        size = await self._objects.size_of(row.object_key)
        if size is not None and size == row.size_bytes:
            log.info("compensation.skipped", document_id=str(document_id), reason="the object is back")
            return
        if not await self._records.fail_lost_blob(conn, document_id, row.version):
            return
        if size is not None:  # wrong size: not this document's bytes any more, but kept for inspection
            await self._quarantine(conn, row.object_key, size, event.data.run_id)
        log.warning("compensation.blob_lost", document_id=str(document_id), object_size=size)

    async def stale_upload(self, conn: Connection, event: CloudEvent[StaleUpload]) -> None:
        document_id = event.data.document_id
        upload = await self._records.upload_state(document_id)
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
            if await self._records.finalize(document_id, upload.declared):
                if upload.multipart_upload_id is not None:  # leftover parts, if any; the object is complete
                    await self._objects.abort_multipart(upload.object_key, upload.multipart_upload_id)
                log.info("compensation.upload_finalized", document_id=str(document_id))
                return
            if await self._records.status(document_id) != "failed":  # completed meanwhile
                log.info("compensation.skipped", document_id=str(document_id), reason="document changed")
                return
        elif not await self._records.fail_expired(document_id):
            log.info("compensation.skipped", document_id=str(document_id), reason="document changed")
            return
        await self._release(upload)
        log.info("compensation.upload_failed", document_id=str(document_id), reason="upload_expired")

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
            await self._records.mark_purged(key)
        if keys:
            log.info("quarantine.purged", objects=len(keys))
        return len(keys)
