"""The search index in a real PostgreSQL: version checks, tombstones, search and paging."""

from __future__ import annotations

import uuid

import asyncpg

from depot_indexer import repository
from depot_indexer.domain import Cursor, IndexEntry


def _owner() -> str:
    return f"owner-{uuid.uuid4().hex[:8]}"


def _entry(
    owner: str,
    *,
    body: str = "",
    filename: str = "notes.txt",
    version: int = 2,
    document_id: uuid.UUID | None = None,
) -> IndexEntry:
    return IndexEntry(
        document_id=document_id or uuid.uuid4(),
        owner_id=owner,
        filename=filename,
        content_type="text/plain",
        size_bytes=len(body),
        sha256="0" * 64,
        version=version,
        body=body,
    )


async def _upsert(index_pool: asyncpg.Pool, entry: IndexEntry) -> bool:
    async with index_pool.acquire() as conn:
        return await repository.upsert_entry(conn, entry)


async def _ids(index_pool: asyncpg.Pool, owner: str, query: str) -> set[uuid.UUID]:
    page = await repository.search(index_pool, owner_id=owner, query=query, limit=100)
    return {hit.document_id for hit in page.hits}


async def test_newer_version_replaces_and_older_or_equal_is_ignored(index_pool: asyncpg.Pool) -> None:
    """A stored event applies only over an older version of the same document."""
    owner = _owner()
    first = _entry(owner, body="apples", version=2)
    assert await _upsert(index_pool, first)
    assert not await _upsert(index_pool, first)  # redelivery
    newer = _entry(owner, body="bananas", version=3, document_id=first.document_id)
    assert await _upsert(index_pool, newer)
    stale = _entry(owner, body="cherries", version=2, document_id=first.document_id)
    assert not await _upsert(index_pool, stale)
    assert await _ids(index_pool, owner, "bananas") == {first.document_id}
    assert await _ids(index_pool, owner, "apples") == set()
    assert await _ids(index_pool, owner, "cherries") == set()
    assert await repository.version_of(index_pool, first.document_id) == 3


async def test_tombstone_prevents_resurrection_by_a_stale_stored_event(index_pool: asyncpg.Pool) -> None:
    """After a delete, a late document.stored of an older or equal version changes nothing."""
    owner = _owner()
    entry = _entry(owner, body="contract draft", version=2)
    assert await _upsert(index_pool, entry)
    assert await repository.tombstone(index_pool, document_id=entry.document_id, owner_id=owner, version=3)
    assert await _ids(index_pool, owner, "contract") == set()
    assert not await _upsert(index_pool, entry)
    assert not await _upsert(index_pool, _entry(owner, body="x", version=3, document_id=entry.document_id))
    assert await _ids(index_pool, owner, "contract") == set()
    row = await index_pool.fetchrow(
        "SELECT status, body, filename FROM search.index_entries WHERE document_id = $1", entry.document_id
    )
    assert row is not None
    assert (row["status"], row["body"], row["filename"]) == ("removed", None, None)


async def test_delete_before_stored_leaves_a_tombstone(index_pool: asyncpg.Pool) -> None:
    """A delete that overtakes its stored event inserts a tombstone the stored event respects."""
    owner = _owner()
    document_id = uuid.uuid4()
    assert await repository.tombstone(index_pool, document_id=document_id, owner_id=owner, version=3)
    assert not await _upsert(index_pool, _entry(owner, body="ghost", version=2, document_id=document_id))
    assert await _ids(index_pool, owner, "ghost") == set()


async def test_stale_delete_does_not_remove_a_newer_version(index_pool: asyncpg.Pool) -> None:
    """A delete older than the indexed version is ignored."""
    owner = _owner()
    entry = _entry(owner, body="keeper", version=5)
    assert await _upsert(index_pool, entry)
    assert not await repository.tombstone(index_pool, document_id=entry.document_id, owner_id=owner, version=4)
    assert await _ids(index_pool, owner, "keeper") == {entry.document_id}


async def test_failed_removes_an_indexed_document(index_pool: asyncpg.Pool) -> None:
    """document.failed takes an indexed document out of search, keeping its version."""
    owner = _owner()
    entry = _entry(owner, body="lost blob", version=2)
    assert await _upsert(index_pool, entry)
    assert await repository.remove(index_pool, entry.document_id)
    assert not await repository.remove(index_pool, entry.document_id)
    assert await _ids(index_pool, owner, "blob") == set()
    assert not await _upsert(index_pool, entry)


async def test_search_is_owner_scoped(index_pool: asyncpg.Pool) -> None:
    """One owner never sees another owner's documents."""
    alice, bob = _owner(), _owner()
    mine = _entry(alice, body="shared secret word")
    theirs = _entry(bob, body="shared secret word")
    assert await _upsert(index_pool, mine)
    assert await _upsert(index_pool, theirs)
    assert await _ids(index_pool, alice, "secret") == {mine.document_id}
    assert await _ids(index_pool, bob, "secret") == {theirs.document_id}


async def test_a_nul_in_the_query_separates_words_instead_of_failing(index_pool: asyncpg.Pool) -> None:
    """PostgreSQL text cannot hold NUL (schemathesis sent one and got a 500): it is a word separator."""
    owner = _owner()
    entry = _entry(owner, body="an egret in the marsh")
    assert await _upsert(index_pool, entry)
    assert await _ids(index_pool, owner, "egret\x00marsh") == {entry.document_id}
    assert await _ids(index_pool, owner, "\x00") == set()


async def test_stems_and_filename_words_both_match(index_pool: asyncpg.Pool) -> None:
    """English stems match the body, and exact filename words match too."""
    owner = _owner()
    stemmed = _entry(owner, body="We paid the invoice yesterday", filename="a.txt")
    named = _entry(owner, body="", filename="kubernetes-runbook.pdf")
    assert await _upsert(index_pool, stemmed)
    assert await _upsert(index_pool, named)
    assert await _ids(index_pool, owner, "invoices") == {stemmed.document_id}
    assert await _ids(index_pool, owner, "runbook") == {named.document_id}
    assert await _ids(index_pool, owner, "runbooks") == {named.document_id}
    assert await _ids(index_pool, owner, "kubernetes-runbook.pdf") == {named.document_id}
    assert await _ids(index_pool, owner, "invoice -paid") == set()
    assert await _ids(index_pool, owner, '"paid the invoice"') == {stemmed.document_id}


async def test_keyset_cursor_pages_through_every_hit_once_best_first(index_pool: asyncpg.Pool) -> None:
    """Paging with next_cursor returns each hit exactly once, in descending score order."""
    owner = _owner()
    expected = set()
    for i in range(25):
        # a few distinct scores, and ties broken by document id
        entry = _entry(owner, body=" ".join(["budget"] * (1 + i % 4) + ["filler"] * 20))
        assert await _upsert(index_pool, entry)
        expected.add(entry.document_id)
    seen: list[tuple[float, uuid.UUID]] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await repository.search(index_pool, owner_id=owner, query="budget", limit=10, cursor=cursor)
        pages += 1
        seen.extend((hit.score, hit.document_id) for hit in page.hits)
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor.encode())
    assert pages == 3
    assert len(seen) == 25
    assert {document_id for _, document_id in seen} == expected
    assert seen == sorted(seen, reverse=True)


async def test_exact_page_size_has_no_next_cursor(index_pool: asyncpg.Pool) -> None:
    """When the hits fill the page exactly, there is no next page."""
    owner = _owner()
    for _ in range(3):
        assert await _upsert(index_pool, _entry(owner, body="triple"))
    page = await repository.search(index_pool, owner_id=owner, query="triple", limit=3)
    assert len(page.hits) == 3
    assert page.next_cursor is None


async def test_snippet_highlights_matches_and_escapes_html(index_pool: asyncpg.Pool) -> None:
    """Snippets wrap matches in <b>…</b> and escape every other markup character."""
    owner = _owner()
    entry = _entry(owner, body="Terms & conditions: the invoices a < b are due in thirty days.")
    assert await _upsert(index_pool, entry)
    page = await repository.search(index_pool, owner_id=owner, query="invoice", limit=5)
    (hit,) = page.hits
    assert "<b>invoices</b>" in hit.snippet
    assert "&amp;" in hit.snippet
    assert "&lt;" in hit.snippet
    assert hit.score > 0


async def test_filename_only_match_uses_the_filename_as_snippet(index_pool: asyncpg.Pool) -> None:
    """A document without text gets its highlighted filename as snippet."""
    owner = _owner()
    entry = _entry(owner, body="", filename="holiday photo.png")
    assert await _upsert(index_pool, entry)
    (hit,) = (await repository.search(index_pool, owner_id=owner, query="holiday", limit=5)).hits
    assert hit.snippet == "<b>holiday</b> photo.png"
    assert hit.filename == "holiday photo.png"


async def test_stopword_or_punctuation_query_matches_nothing_without_error(index_pool: asyncpg.Pool) -> None:
    """A query of only stop words or punctuation returns no hits instead of failing."""
    owner = _owner()
    entry = _entry(owner, body="the quick fox")
    assert await _upsert(index_pool, entry)
    assert await _ids(index_pool, owner, "the") == set()
    assert await _ids(index_pool, owner, "!!! & |") == set()
    assert await _ids(index_pool, owner, "quick") == {entry.document_id}


async def test_oversized_tsvector_body_is_truncated_not_failed(index_pool: asyncpg.Pool) -> None:
    """A body whose tsvector exceeds PostgreSQL's 1 MB limit is halved until it fits."""
    owner = _owner()
    body = " ".join(uuid.uuid4().hex for _ in range(40_000)) + " "
    entry = _entry(owner, body="needle " + body)
    async with index_pool.acquire() as conn, conn.transaction():
        assert await repository.upsert_entry(conn, entry)
    assert await _ids(index_pool, owner, "needle") == {entry.document_id}
