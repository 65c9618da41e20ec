"""PostgreSQL adapter for the search index (schema ``search``).

Writes are version-checked so at-least-once, possibly stale deliveries converge on the
newest state: ``document.stored`` applies only over an older version, ``document.deleted``
leaves a ``removed`` tombstone carrying its version, which no older ``stored`` can undo.
Search is owner-scoped and pages with a keyset cursor over ``(score, document_id)``.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import structlog

from depot_common.db import Connection
from depot_common.outbox import channel
from depot_indexer.domain import Cursor, IndexedEntry, IndexEntry, SearchHit, SearchPage

log = structlog.get_logger(__name__)

SCHEMA = "search"

Executor: TypeAlias = "Connection | asyncpg.Pool[asyncpg.Record]"

# Snippet highlight markers: control characters extraction never keeps, so the snippet can
# be HTML-escaped and only the highlights turned into <b>…</b> afterwards.
_START, _STOP = "\x02", "\x03"
_HEADLINE_OPTIONS = f'StartSel="{_START}", StopSel="{_STOP}", MaxWords=35, MinWords=15, MaxFragments=2'

_UPSERT = """
INSERT INTO search.index_entries AS e
    (document_id, owner_id, filename, content_type, size_bytes, sha256, version, status, body,
     extraction_failure, indexed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'indexed', $8, $9, clock_timestamp())
ON CONFLICT (document_id) DO UPDATE SET
    owner_id = EXCLUDED.owner_id, filename = EXCLUDED.filename,
    content_type = EXCLUDED.content_type, size_bytes = EXCLUDED.size_bytes,
    sha256 = EXCLUDED.sha256, version = EXCLUDED.version, status = 'indexed',
    body = EXCLUDED.body, extraction_failure = EXCLUDED.extraction_failure, indexed_at = EXCLUDED.indexed_at
WHERE e.version < EXCLUDED.version
RETURNING true
"""

#: :data:`_UPSERT` and, only when it wrote the entry, an outbox row ($10-$14) and its notification ($15).
_UPSERT_QUEUED = f"""
WITH entry AS ({_UPSERT}), queued AS (
    INSERT INTO search.outbox (event_id, topic, key, value, headers)
    SELECT $10::uuid, $11::text, $12::text, $13::json, $14::json FROM entry RETURNING 1
)
SELECT count(pg_notify($15, '')) > 0 FROM queued
"""

#: A body this short cannot make a tsvector over PostgreSQL's 1 MB limit (at most 4 bytes per character
#: of lexemes plus a few bytes of entry and position per word: well under 1 MB), so it needs no savepoint.
SMALL_BODY_CHARS = 64_000

_TOMBSTONE = """
INSERT INTO search.index_entries AS e (document_id, owner_id, version, status, indexed_at)
VALUES ($1, $2, $3, 'removed', clock_timestamp())
ON CONFLICT (document_id) DO UPDATE SET
    version = EXCLUDED.version, status = 'removed', filename = NULL, content_type = NULL,
    size_bytes = NULL, sha256 = NULL, body = NULL, extraction_failure = NULL, indexed_at = EXCLUDED.indexed_at
WHERE e.version <= EXCLUDED.version
RETURNING true
"""

_REMOVE = """
UPDATE search.index_entries SET
    status = 'removed', filename = NULL, content_type = NULL, size_bytes = NULL, sha256 = NULL,
    body = NULL, extraction_failure = NULL, indexed_at = clock_timestamp()
WHERE document_id = $1 AND status = 'indexed'
RETURNING true
"""

# $1 owner, $2 query text, $3/$4 cursor (score, id) or NULLs, $5 page size + 1.
# The query ORs the English (stems) and simple (exact words, filenames) parses.
_SEARCH = f"""
WITH q AS (
    SELECT websearch_to_tsquery('english', $2) || websearch_to_tsquery('simple', $2) AS query
), page AS (
    SELECT e.document_id, e.filename, e.body, ts_rank(e.tsv, q.query) AS score
    FROM search.index_entries e, q
    WHERE e.owner_id = $1 AND e.status = 'indexed' AND e.tsv @@ q.query
      AND ($3::real IS NULL OR (ts_rank(e.tsv, q.query), e.document_id) < ($3::real, $4::uuid))
    ORDER BY score DESC, e.document_id DESC
    LIMIT $5
)
SELECT page.document_id, page.filename, page.score,
       ts_headline('english', coalesce(nullif(page.body, ''), page.filename), q.query,
                   '{_HEADLINE_OPTIONS}') AS snippet
FROM page, q
ORDER BY page.score DESC, page.document_id DESC
"""


async def version_of(conn: Executor, document_id: uuid.UUID) -> int | None:
    """The version the index holds for ``document_id`` (indexed or tombstone), if any."""
    version: int | None = await conn.fetchval(
        "SELECT version FROM search.index_entries WHERE document_id = $1", document_id
    )
    return version


async def versions_of(conn: Executor, document_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The version the index holds (indexed or tombstone) of each of ``document_ids`` it knows."""
    rows = await conn.fetch(
        "SELECT document_id, version FROM search.index_entries WHERE document_id = ANY($1::uuid[])", document_ids
    )
    return {row["document_id"]: row["version"] for row in rows}


async def upsert_entry(conn: Connection, entry: IndexEntry, *, outbox: tuple[Any, ...] | None = None) -> bool:
    """Index ``entry`` unless the index already holds this or a newer version; with it, in the same statement,
    the ``outbox`` row (``depot_common.outbox.outbox_row``) and its notification, when given.

    Returns whether the entry was written. A body whose tsvector exceeds PostgreSQL's 1 MB
    limit is halved until it fits (in a savepoint, so the caller's transaction survives); a body
    of at most :data:`SMALL_BODY_CHARS` characters cannot reach it and is written without one.
    """
    body = entry.body
    statement, extra = (_UPSERT, ()) if outbox is None else (_UPSERT_QUEUED, (*outbox, channel(SCHEMA)))
    if len(body) <= SMALL_BODY_CHARS:
        return bool(await conn.fetchval(statement, *_upsert_args(entry, body), *extra))
    while True:
        try:
            async with conn.transaction():
                applied = await conn.fetchval(statement, *_upsert_args(entry, body), *extra)
            return bool(applied)
        except asyncpg.ProgramLimitExceededError:
            if not body:
                raise
            body = body[: len(body) // 2]
            log.warning("index.body_truncated", document_id=str(entry.document_id), body_chars=len(body))


def _upsert_args(entry: IndexEntry, body: str) -> tuple[object, ...]:
    return (
        entry.document_id,
        entry.owner_id,
        entry.filename,
        entry.content_type,
        entry.size_bytes,
        entry.sha256,
        entry.version,
        body,
        entry.extraction_failure,
    )


async def tombstone(conn: Executor, *, document_id: uuid.UUID, owner_id: str, version: int) -> bool:
    """Mark ``document_id`` removed at ``version`` unless a newer version is indexed.

    Inserts the tombstone when the document was never indexed, so a ``document.stored``
    delivered late cannot bring it back. Returns whether the tombstone was written.
    """
    applied = await conn.fetchval(_TOMBSTONE, document_id, owner_id, version)
    return bool(applied)


async def remove(conn: Executor, document_id: uuid.UUID) -> bool:
    """Mark an indexed ``document_id`` removed, keeping its version; whether it was indexed."""
    applied = await conn.fetchval(_REMOVE, document_id)
    return bool(applied)


async def search(conn: Executor, *, owner_id: str, query: str, limit: int, cursor: Cursor | None = None) -> SearchPage:
    """One page of ``owner_id``'s indexed documents matching ``query``, best first.

    A NUL character, which PostgreSQL text cannot hold, separates words like a space."""
    rows = await conn.fetch(
        _SEARCH,
        owner_id,
        query.replace("\x00", " "),
        cursor.score if cursor else None,
        cursor.document_id if cursor else None,
        limit + 1,
    )
    hits = [
        SearchHit(
            document_id=row["document_id"],
            filename=row["filename"],
            snippet=_snippet(row["snippet"]),
            score=row["score"],
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    next_cursor = Cursor(score=hits[-1].score, document_id=hits[-1].document_id) if more else None
    return SearchPage(hits=hits, next_cursor=next_cursor)


async def indexed_entries(conn: Executor, *, owner_id: str, document_ids: list[uuid.UUID]) -> list[IndexedEntry]:
    """Those of ``document_ids`` that ``owner_id``'s search index holds (tombstones and others' excluded)."""
    rows = await conn.fetch(
        "SELECT document_id, version, indexed_at, extraction_failure FROM search.index_entries"
        " WHERE document_id = ANY($1::uuid[]) AND owner_id = $2 AND status = 'indexed'"
        " ORDER BY document_id",
        document_ids,
        owner_id,
    )
    return [
        IndexedEntry(
            document_id=r["document_id"],
            version=r["version"],
            indexed_at=r["indexed_at"],
            extraction_failure=r["extraction_failure"],
        )
        for r in rows
    ]


def _snippet(headline: str | None) -> str:
    """HTML-escape a headline, then turn its highlight markers into ``<b>…</b>``."""
    escaped = html.escape(headline or "", quote=False)
    return escaped.replace(_START, "<b>").replace(_STOP, "</b>").strip()
