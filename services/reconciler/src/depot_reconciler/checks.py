"""The reconcile checks as pure functions: what the scan saw in, findings out (SPEC §7, §8).

Nothing here does I/O. ``merge_by_key`` walks two key-sorted streams (the S3 listing of
``documents/`` and the documents ordered by ``object_key``) side by side, so memory stays
flat whatever the bucket size; the ``classify_*`` functions decide what is a finding, with
every time allowance measured against one ``now`` taken when the run starts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

ORPHAN_OBJECT = "orphan_object"
MISSING_BLOB = "missing_blob"
STALE_UPLOAD = "stale_upload"
UNINDEXED = "unindexed"
GHOST_INDEX_ENTRY = "ghost_index_entry"
STUCK_OUTBOX = "stuck_outbox"

CHECKS: tuple[str, ...] = (ORPHAN_OBJECT, MISSING_BLOB, STALE_UPLOAD, UNINDEXED, GHOST_INDEX_ENTRY, STUCK_OUTBOX)
#: Checks answered by the merge of the S3 listing with the documents.
MERGE_CHECKS = frozenset({ORPHAN_OBJECT, MISSING_BLOB, STALE_UPLOAD})
#: Document statuses whose object belongs to them (a pending upload may have written it).
LIVE_STATUSES = frozenset({"stored", "pending"})


class ScanOrderError(RuntimeError):
    """A stream was not sorted by key: merging it would invent findings."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object of the S3 listing."""

    key: str
    size: int
    last_modified: datetime
    etag: str = ""


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """The columns of an ``upload.documents`` row the checks need."""

    id: uuid.UUID
    object_key: str
    status: str
    size_bytes: int | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UnindexedCandidate:
    """A ``stored`` document whose index entry is absent, removed, or at an older version."""

    document_id: uuid.UUID
    version: int
    updated_at: datetime
    entry_status: str | None
    entry_version: int | None


@dataclass(frozen=True, slots=True)
class GhostCandidate:
    """An ``indexed`` entry whose document is absent or not ``stored``."""

    document_id: uuid.UUID
    entry_version: int
    indexed_at: datetime
    document_status: str | None
    document_updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class UnpublishedEvent:
    """An unpublished row of ``upload.outbox``."""

    event_id: uuid.UUID
    topic: str
    key: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Limits:
    """Every allowance of the checks, and the ``now`` they are measured from."""

    now: datetime
    grace: timedelta
    upload_ttl: timedelta
    index_lag: timedelta
    outbox_allowance: timedelta


@dataclass(frozen=True, slots=True)
class Finding:
    """One inconsistency: its class, what it is about, and the state the scan saw."""

    check: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)


def _document_state(doc: DocumentInfo) -> dict[str, Any]:
    return {
        "document_id": str(doc.id),
        "status": doc.status,
        "version": doc.version,
        "updated_at": doc.updated_at.isoformat(),
    }


def classify_pair(obj: ObjectInfo | None, doc: DocumentInfo | None, limits: Limits) -> list[Finding]:
    """Findings for one key: the object listed under it (if any) and the document naming it (if any)."""
    findings: list[Finding] = []
    unowned = obj is not None and (doc is None or doc.status not in LIVE_STATUSES)
    if obj is not None and unowned and obj.last_modified <= limits.now - limits.grace:
        details: dict[str, Any] = {
            "object_key": obj.key,
            "size_bytes": obj.size,
            "last_modified": obj.last_modified.isoformat(),
            "etag": obj.etag,
        }
        if doc is not None:
            details |= _document_state(doc)
        findings.append(Finding(ORPHAN_OBJECT, obj.key, details))
    if doc is None:
        return findings
    # A document changed after the run started may have been listed before its object was
    # written (the listing and the pages interleave): the next run judges it.
    if doc.status == "stored" and doc.updated_at <= limits.now and (obj is None or obj.size != doc.size_bytes):
        details = {
            **_document_state(doc),
            "object_key": doc.object_key,
            "expected_size": doc.size_bytes,
            "actual_size": None if obj is None else obj.size,
        }
        findings.append(Finding(MISSING_BLOB, str(doc.id), details))
    if doc.status == "pending" and doc.created_at <= limits.now - limits.upload_ttl - limits.grace:
        details = {**_document_state(doc), "created_at": doc.created_at.isoformat()}
        findings.append(Finding(STALE_UPLOAD, str(doc.id), details))
    return findings


def classify_unindexed(candidate: UnindexedCandidate, limits: Limits) -> Finding | None:
    """A stored document out of the index is a finding once the index lag allowance has passed."""
    if candidate.updated_at > limits.now - limits.index_lag:
        return None
    return Finding(
        UNINDEXED,
        str(candidate.document_id),
        {
            "document_id": str(candidate.document_id),
            "status": "stored",
            "version": candidate.version,
            "updated_at": candidate.updated_at.isoformat(),
            "entry_status": candidate.entry_status,
            "entry_version": candidate.entry_version,
        },
    )


def classify_ghost(candidate: GhostCandidate, limits: Limits) -> Finding | None:
    """An indexed entry of a document that is not stored is a finding once the index lag has passed."""
    changed_at = candidate.document_updated_at or candidate.indexed_at
    if changed_at > limits.now - limits.index_lag:
        return None
    return Finding(
        GHOST_INDEX_ENTRY,
        str(candidate.document_id),
        {
            "document_id": str(candidate.document_id),
            "entry_version": candidate.entry_version,
            "document_status": candidate.document_status,
        },
    )


def classify_outbox(event: UnpublishedEvent, limits: Limits) -> Finding | None:
    """An event unpublished for longer than the outbox allowance is a finding (reported only)."""
    if event.created_at > limits.now - limits.outbox_allowance:
        return None
    return Finding(
        STUCK_OUTBOX,
        str(event.event_id),
        {
            "topic": event.topic,
            "key": event.key,
            "created_at": event.created_at.isoformat(),
            "age_seconds": int((limits.now - event.created_at).total_seconds()),
        },
    )


async def _ordered(items: AsyncIterable[Any], key: Any, name: str) -> AsyncIterator[Any]:
    previous: str | None = None
    async for item in items:
        current: str = key(item)
        if previous is not None and current <= previous:
            raise ScanOrderError(f"{name} not strictly sorted: {current!r} after {previous!r}")
        previous = current
        yield item


async def merge_by_key(
    objects: AsyncIterable[ObjectInfo], documents: AsyncIterable[DocumentInfo]
) -> AsyncIterator[tuple[ObjectInfo | None, DocumentInfo | None]]:
    """Pair each key with its object and its document, walking both sorted streams once.

    Keys compare as Python strings (code points), which is S3's UTF-8 byte order and
    PostgreSQL's ``COLLATE "C"``. A stream that goes backwards raises ``ScanOrderError``.
    """
    object_iter = aiter(_ordered(objects, lambda o: o.key, "S3 listing"))
    document_iter = aiter(_ordered(documents, lambda d: d.object_key, "documents"))
    obj: ObjectInfo | None = await anext(object_iter, None)
    doc: DocumentInfo | None = await anext(document_iter, None)
    while obj is not None or doc is not None:
        if doc is None or (obj is not None and obj.key < doc.object_key):
            yield obj, None
            obj = await anext(object_iter, None)
        elif obj is None or doc.object_key < obj.key:
            yield None, doc
            doc = await anext(document_iter, None)
        else:
            yield obj, doc
            obj = await anext(object_iter, None)
            doc = await anext(document_iter, None)
