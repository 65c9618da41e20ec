"""The streams the checks read: the S3 listing and keyset pages of PostgreSQL.

Every source yields one page at a time (``page_size`` objects or rows), so a scan holds at
most a page of each in memory. ``scan`` runs the selected checks over them and yields
findings as they are found; ``ScanProgress`` counts what was read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import asyncpg

from depot_reconciler.checks import (
    GHOST_INDEX_ENTRY,
    MERGE_CHECKS,
    STUCK_OUTBOX,
    UNINDEXED,
    DocumentInfo,
    Finding,
    GhostCandidate,
    Limits,
    ObjectInfo,
    UnindexedCandidate,
    UnpublishedEvent,
    classify_ghost,
    classify_outbox,
    classify_pair,
    classify_unindexed,
    merge_by_key,
)

DOCUMENTS_PREFIX = "documents/"
_NIL = uuid.UUID(int=0)


@dataclass(slots=True)
class ScanProgress:
    """What a scan has read so far; ``on_change`` is called after every page or pair."""

    objects: int = 0
    documents: int = 0
    index_rows: int = 0
    outbox_rows: int = 0
    on_change: Callable[[ScanProgress], None] | None = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


async def list_objects(
    s3: Any, bucket: str, *, page_size: int, prefix: str = DOCUMENTS_PREFIX
) -> AsyncIterator[ObjectInfo]:
    """The objects under ``prefix``, in S3's key order (UTF-8 bytes), one listing page at a time."""
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
        for item in page.get("Contents", []):
            yield ObjectInfo(
                key=item["Key"],
                size=int(item["Size"]),
                last_modified=item["LastModified"],
                etag=str(item.get("ETag", "")).strip('"'),
            )


async def _keyset(
    pool: asyncpg.Pool, query: str, *, key: str, start: Any, page_size: int
) -> AsyncIterator[dict[str, Any]]:
    """Rows of ``query`` (``$1`` = the last key seen, ``$2`` = the page size), page after page."""
    last = start
    while True:
        rows = await pool.fetch(query, last, page_size)
        for row in rows:
            yield dict(row)
        if len(rows) < page_size:
            return
        last = rows[-1][key]


async def list_documents(pool: asyncpg.Pool, *, page_size: int) -> AsyncIterator[DocumentInfo]:
    """Every document in ``object_key`` byte order (``COLLATE "C"`` = S3's order), keyset-paged."""
    query = (
        "SELECT id, object_key, status, size_bytes, version, created_at, updated_at FROM upload.documents"
        ' WHERE object_key COLLATE "C" > $1 ORDER BY object_key COLLATE "C" LIMIT $2'
    )
    async for row in _keyset(pool, query, key="object_key", start="", page_size=page_size):
        yield DocumentInfo(**row)


async def list_unindexed(pool: asyncpg.Pool, *, page_size: int) -> AsyncIterator[UnindexedCandidate]:
    """Stored documents absent from ``search.index_entries``, removed there, or indexed at an older version."""
    query = (
        "SELECT d.id AS document_id, d.version, d.updated_at, e.status AS entry_status, e.version AS entry_version"
        " FROM upload.documents d LEFT JOIN search.index_entries e ON e.document_id = d.id"
        " WHERE d.status = 'stored' AND d.id > $1"
        "   AND (e.document_id IS NULL OR e.status <> 'indexed' OR e.version < d.version)"
        " ORDER BY d.id LIMIT $2"
    )
    async for row in _keyset(pool, query, key="document_id", start=_NIL, page_size=page_size):
        yield UnindexedCandidate(**row)


async def list_ghosts(pool: asyncpg.Pool, *, page_size: int) -> AsyncIterator[GhostCandidate]:
    """Indexed entries whose document is absent or not stored."""
    query = (
        "SELECT e.document_id, e.version AS entry_version, e.indexed_at, d.status AS document_status,"
        " d.updated_at AS document_updated_at"
        " FROM search.index_entries e LEFT JOIN upload.documents d ON d.id = e.document_id"
        " WHERE e.status = 'indexed' AND e.document_id > $1 AND (d.id IS NULL OR d.status <> 'stored')"
        " ORDER BY e.document_id LIMIT $2"
    )
    async for row in _keyset(pool, query, key="document_id", start=_NIL, page_size=page_size):
        yield GhostCandidate(**row)


async def list_unpublished(pool: asyncpg.Pool, *, page_size: int) -> AsyncIterator[UnpublishedEvent]:
    """Unpublished events of ``upload.outbox`` in id order."""
    query = (
        "SELECT id, event_id, topic, key, created_at FROM upload.outbox"
        " WHERE published_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
    )
    async for row in _keyset(pool, query, key="id", start=0, page_size=page_size):
        del row["id"]
        yield UnpublishedEvent(**row)


async def scan(
    pool: asyncpg.Pool,
    s3: Any,
    *,
    bucket: str,
    checks: Collection[str],
    limits: Limits,
    page_size: int,
    progress: ScanProgress,
) -> AsyncIterator[Finding]:
    """Run ``checks`` over the streams and yield their findings as they are found."""
    if MERGE_CHECKS & set(checks):
        objects = list_objects(s3, bucket, page_size=page_size)
        documents = list_documents(pool, page_size=page_size)
        async for obj, doc in merge_by_key(objects, documents):
            progress.objects += obj is not None
            progress.documents += doc is not None
            progress.changed()
            for finding in classify_pair(obj, doc, limits):
                if finding.check in checks:
                    yield finding
    if UNINDEXED in checks:
        async for unindexed in list_unindexed(pool, page_size=page_size):
            progress.index_rows += 1
            progress.changed()
            if (finding_or_none := classify_unindexed(unindexed, limits)) is not None:
                yield finding_or_none
    if GHOST_INDEX_ENTRY in checks:
        async for ghost in list_ghosts(pool, page_size=page_size):
            progress.index_rows += 1
            progress.changed()
            if (finding_or_none := classify_ghost(ghost, limits)) is not None:
                yield finding_or_none
    if STUCK_OUTBOX in checks:
        async for event in list_unpublished(pool, page_size=page_size):
            progress.outbox_rows += 1
            progress.changed()
            if (finding_or_none := classify_outbox(event, limits)) is not None:
                yield finding_or_none
