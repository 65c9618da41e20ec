"""Handlers of ``depot.documents.v1``: keep the search index in step with the documents.

Each handler runs inside the consumer's transaction, which also records the event id in
``search.processed_events`` (``document.stored`` reads the object and extracts its text just
before that transaction, see :func:`build_handlers`); the version checks in :mod:`depot_indexer.repository` make a
stale or duplicated event a no-op. Every change of an entry to a new version writes
``document.indexed`` (or ``document.index_failed`` when the text could not be extracted:
the entry is then findable by filename only) into ``search.outbox`` in that same
transaction; ``depot-indexer relay`` publishes it to ``depot.index.v1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel

from depot_common.db import Connection
from depot_common.events import (
    INDEX_TOPIC,
    CloudEvent,
    DocumentDeleted,
    DocumentFailed,
    DocumentIndexed,
    DocumentIndexFailed,
    DocumentStored,
    GhostIndexEntry,
    Reindex,
    handler_table,
    type_of,
)
from depot_common.outbox import outbox_row
from depot_common.staged import Queryable, Staged
from depot_indexer import repository
from depot_indexer.domain import IndexEntry
from depot_indexer.extraction import ExtractionError, Kind, extract_text, kind_of
from depot_indexer.ports import BlobNotFound, BlobReader, DocumentSource

log = structlog.get_logger(__name__)

#: Same shape as ``depot_common.consumer.Handler`` (not imported: it pulls in aiokafka).
EventHandler = Callable[[Connection, CloudEvent[Any]], Awaitable[None]]

#: Up to this many bytes, text-like documents are extracted on the event loop: decoding a few KiB takes
#: microseconds, less than handing it to a thread and back (PDFs always go to a thread).
INLINE_EXTRACTION_BYTES = 64 * 1024

#: The CloudEvents ``source`` of the events the indexer publishes.
SOURCE = "depot/indexer"
#: Their envelope class, parametrised once (``CloudEvent[Any]`` looks its class up in pydantic's cache each time).
_OUTCOME_EVENT: type[CloudEvent[Any]] = CloudEvent[Any]


@dataclass(frozen=True)
class Read:
    """What ``document.stored`` found before its transaction: the text (or why there is none), or that the
    index already holds this or a newer version."""

    body: str = ""
    failure: str | None = None
    stale_behind: int | None = None


def build_handlers(
    blobs: BlobReader, documents: DocumentSource, *, max_object_bytes: int, max_text_chars: int
) -> dict[str, tuple[type[BaseModel], EventHandler]]:
    """The ``EventConsumer`` handler table: event type → (data model, handler).

    ``document.stored`` is :class:`~depot_common.staged.Staged`: the version check (one query per
    batch) and the S3 read (and extraction) run before the consumer opens its transaction, the entry
    and its outcome event are written in it, by one statement.
    """

    async def download(data: DocumentStored) -> Read:
        """The document's text, or why there is none."""
        try:
            body = await _extract(blobs, data, max_object_bytes=max_object_bytes, max_text_chars=max_text_chars)
        except ExtractionError as error:
            return Read(failure=error.reason)
        return Read(body=body)

    async def read(db: Queryable, data: DocumentStored) -> Read:
        """Outside the transaction: the document's text, unless the index already holds this or a newer version
        (then nothing is downloaded: versions in the index only grow, so the event stays stale)."""
        return _stale(await repository.version_of(db, data.document_id), data) or await download(data)

    async def apply(conn: Connection, data: DocumentStored, found: Read) -> None:
        """In the transaction: write the entry (version-checked again) and, with it, its outcome event."""
        if found.stale_behind is not None:
            log.info(
                "index.stale_event",
                document_id=str(data.document_id),
                version=data.version,
                indexed_version=found.stale_behind,
            )
            return
        entry = IndexEntry(
            document_id=data.document_id,
            owner_id=data.owner_id,
            filename=data.filename,
            content_type=data.content_type,
            size_bytes=data.size_bytes,
            sha256=data.sha256,
            version=data.version,
            body=found.body,
            extraction_failure=found.failure,
        )
        outcome = _outcome(data, text_chars=len(found.body), failure=found.failure)
        if await repository.upsert_entry(conn, entry, outbox=outcome):
            log.info(
                "index.updated", document_id=str(data.document_id), version=data.version, body_chars=len(found.body)
            )
            if found.failure is not None:
                log.warning("index.extraction_failed", document_id=str(data.document_id), reason=found.failure)
        else:
            log.info("index.stale_event", document_id=str(data.document_id), version=data.version)

    async def settle_stored(db: Queryable, events: Sequence[CloudEvent[Any]]) -> list[Read | None]:
        """A batch's stale events (one query for all): nothing to download for them."""
        known = await repository.versions_of(db, [event.data.document_id for event in events])
        return [_stale(known.get(event.data.document_id), event.data) for event in events]

    async def read_stored(db: Queryable, event: CloudEvent[Any]) -> Read:
        return await download(event.data)

    async def apply_stored(conn: Connection, event: CloudEvent[Any], found: Read) -> None:
        await apply(conn, event.data, found)

    async def index(conn: Connection, data: DocumentStored) -> None:
        await apply(conn, data, await read(conn, data))

    async def on_deleted(conn: Connection, event: CloudEvent[Any]) -> None:
        data: DocumentDeleted = event.data
        applied = await repository.tombstone(
            conn, document_id=data.document_id, owner_id=data.owner_id, version=data.version
        )
        log.info(
            "index.removed" if applied else "index.stale_event",
            document_id=str(data.document_id),
            version=data.version,
        )

    async def on_failed(conn: Connection, event: CloudEvent[Any]) -> None:
        data: DocumentFailed = event.data
        removed = await repository.remove(conn, data.document_id)
        log.info(
            "index.removed" if removed else "index.not_indexed",
            document_id=str(data.document_id),
            reason=data.reason,
        )

    async def on_reindex(conn: Connection, event: CloudEvent[Any]) -> None:
        data: Reindex = event.data
        current = await documents.current(conn, data.document_id)
        if current is None:  # no longer stored: nothing to index (a ghost check removes leftovers)
            log.info("index.reindex_skipped", document_id=str(data.document_id), run_id=str(data.run_id))
            return
        await index(conn, current)

    async def on_ghost(conn: Connection, event: CloudEvent[Any]) -> None:
        data: GhostIndexEntry = event.data
        if await documents.current(conn, data.document_id) is not None:  # stored again since the scan
            log.info("index.ghost_skipped", document_id=str(data.document_id), run_id=str(data.run_id))
            return
        removed = await repository.remove(conn, data.document_id)
        log.info("index.ghost_removed" if removed else "index.not_indexed", document_id=str(data.document_id))

    return handler_table(
        {
            DocumentStored: Staged(read_stored, apply_stored, settle_stored),
            DocumentDeleted: on_deleted,
            DocumentFailed: on_failed,
            Reindex: on_reindex,
            GhostIndexEntry: on_ghost,
        }
    )


def _stale(known: int | None, data: DocumentStored) -> Read | None:
    """``data``'s read when the index already holds its version or a newer one (``known``), else ``None``."""
    return Read(stale_behind=known) if known is not None and known >= data.version else None


def _outcome(data: DocumentStored, *, text_chars: int, failure: str | None) -> tuple[Any, ...]:
    """The ``search.outbox`` row of ``document.indexed`` (or ``document.index_failed``), written with the entry."""
    outcome: DocumentIndexed | DocumentIndexFailed
    if failure is None:
        outcome = DocumentIndexed(
            document_id=data.document_id, owner_id=data.owner_id, version=data.version, text_chars=text_chars
        )
    else:
        outcome = DocumentIndexFailed(
            document_id=data.document_id, owner_id=data.owner_id, version=data.version, reason=failure
        )
    event = _OUTCOME_EVENT(
        source=SOURCE,
        type=type_of(type(outcome)),
        subject=str(data.document_id),
        data=outcome,
    )
    return outbox_row(topic=INDEX_TOPIC, key=str(data.document_id), event=event)


async def _extract(blobs: BlobReader, data: DocumentStored, *, max_object_bytes: int, max_text_chars: int) -> str:
    """The document's text; raises :class:`ExtractionError` when there is none to be had.

    An empty document has no text (not a failure); a missing object is one (``object_missing``:
    the reconciler repairs it, and a reindex then reports ``document.indexed``).
    """
    if data.size_bytes == 0:
        return ""
    try:
        raw = await blobs.read(data.object_key, max_object_bytes)
    except BlobNotFound:
        log.warning("index.object_missing", document_id=str(data.document_id), object_key=data.object_key)
        raise ExtractionError("object_missing") from None
    if len(raw) <= INLINE_EXTRACTION_BYTES and kind_of(data.content_type, data.filename) is not Kind.PDF:
        return extract_text(data.content_type, data.filename, raw, max_chars=max_text_chars)
    return await asyncio.to_thread(extract_text, data.content_type, data.filename, raw, max_chars=max_text_chars)
