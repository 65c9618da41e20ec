"""The streams the checks read, shared by every check: the merged S3 listing and documents, and a keyset pager.

Every stream yields one page at a time (``page_size`` objects or rows), so a scan holds at
most a page of each in memory. The S3 listing of ``documents/`` and the documents ordered
by ``object_key`` are merged side by side (:func:`merge_by_key`) into
:data:`OBJECTS_AND_DOCUMENTS`, the source of every check about an object and its
document; the other checks page through PostgreSQL with :func:`keyset`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from depot_reconciler.checks.base import Reads, Source

if TYPE_CHECKING:
    from depot_reconciler.scan import ScanProgress

DOCUMENTS_PREFIX = "documents/"
#: The smallest document id: where a keyset page over ids starts.
NIL = uuid.UUID(int=0)


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


#: One key of the merge: the object listed under it (if any) and the document naming it (if any).
Pair = tuple[ObjectInfo | None, DocumentInfo | None]


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


async def keyset(
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
    async for row in keyset(pool, query, key="object_key", start="", page_size=page_size):
        yield DocumentInfo(**row)


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
) -> AsyncIterator[Pair]:
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


def _pairs(reads: Reads) -> AsyncIterator[Pair]:
    objects = list_objects(reads.s3, reads.bucket, page_size=reads.page_size)
    return merge_by_key(objects, list_documents(reads.pool, page_size=reads.page_size))


def _tally_pair(progress: ScanProgress, pair: Pair) -> None:
    progress.objects += pair[0] is not None
    progress.documents += pair[1] is not None


#: The S3 listing of ``documents/`` merged with the documents, key by key.
OBJECTS_AND_DOCUMENTS: Source[Pair] = Source("objects_and_documents", _pairs, _tally_pair)


def index_rows(progress: ScanProgress, _: object) -> None:
    """``Source.tally`` of a stream of search index rows."""
    progress.index_rows += 1


def outbox_rows(progress: ScanProgress, _: object) -> None:
    """``Source.tally`` of a stream of outbox rows."""
    progress.outbox_rows += 1
