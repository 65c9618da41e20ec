"""The indexer's event handlers and search API against a real PostgreSQL (S3 faked)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import httpx
import pytest

from depot_common.auth import mint_token
from depot_common.events import CloudEvent, DocumentDeleted, DocumentFailed, DocumentStored
from depot_common.s3 import ensure_bucket, object_store, s3_client
from depot_indexer import repository
from depot_indexer.bootstrap import build_app
from depot_indexer.handlers import build_handlers
from depot_indexer.ports import BlobNotFound
from depot_indexer.settings import IndexerSettings
from depot_indexer.storage import S3BlobReader
from tests.conftest import serve

SECRET = secrets.token_urlsafe(32)


class FakeBlobs:
    """An in-memory BlobReader that records what was read."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[tuple[str, int]] = []

    async def read(self, key: str, max_bytes: int) -> bytes:
        self.reads.append((key, max_bytes))
        if key not in self.objects:
            raise BlobNotFound(key)
        return self.objects[key][:max_bytes]


@pytest.fixture
def blobs() -> FakeBlobs:
    return FakeBlobs()


class NoDocuments:
    """A document source in which no document is stored (these tests use documents events only)."""

    async def current(self, conn: Any, document_id: Any) -> None:
        return None


async def _handle(index_pool: asyncpg.Pool, blobs: FakeBlobs, data: Any, type_: str) -> None:
    handlers = build_handlers(blobs, NoDocuments(), max_object_bytes=64, max_text_chars=1000)
    model, handler = handlers[type_]
    event = CloudEvent[Any](
        source="test", type=type_, subject=str(data.document_id), data=model.model_validate(data.model_dump())
    )
    async with index_pool.acquire() as conn, conn.transaction():
        await handler(cast(asyncpg.Connection, conn), event)


def _settings(database_url: str, **overrides: Any) -> IndexerSettings:
    """Indexer settings for this module: the given database, unreachable Kafka and S3."""
    options: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap": "127.0.0.1:9",
        "s3_bucket": "unused",
        "s3_endpoint": "http://127.0.0.1:9",
        "jwt_secret": SECRET,
        **overrides,
    }
    return IndexerSettings(**options)


def _stored(
    owner: str,
    *,
    version: int = 2,
    filename: str = "memo.txt",
    size: int = 10,
    document_id: uuid.UUID | None = None,
    content_type: str = "text/plain",
) -> DocumentStored:
    document_id = document_id or uuid.uuid4()
    return DocumentStored(
        document_id=document_id,
        owner_id=owner,
        filename=filename,
        content_type=content_type,
        size_bytes=size,
        sha256="0" * 64,
        object_key=f"documents/{document_id}",
        version=version,
    )


async def _ids(index_pool: asyncpg.Pool, owner: str, query: str) -> set[uuid.UUID]:
    page = await repository.search(index_pool, owner_id=owner, query=query, limit=100)
    return {hit.document_id for hit in page.hits}


async def test_stored_reads_a_capped_prefix_and_indexes_its_text(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """document.stored reads at most the configured bytes and makes the text searchable."""
    data = _stored("h-alice")
    blobs.objects[data.object_key] = b"pelican migration report " + b"z" * 200
    await _handle(index_pool, blobs, data, "document.stored")
    assert blobs.reads == [(data.object_key, 64)]
    assert await _ids(index_pool, "h-alice", "pelicans") == {data.document_id}


async def _outbox(index_pool: asyncpg.Pool, document_id: uuid.UUID) -> list[dict[str, Any]]:
    """The events ``search.outbox`` holds for ``document_id``, oldest first, with their topic and key."""
    rows = await index_pool.fetch(
        "SELECT topic, key, value FROM search.outbox WHERE key = $1 ORDER BY id", str(document_id)
    )
    return [{"topic": row["topic"], "key": row["key"], **row["value"]} for row in rows]


async def test_indexing_writes_document_indexed_into_the_outbox(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """A new version indexed writes one document.indexed (topic depot.index.v1, key = id) with its text size."""
    data = _stored("h-ivy")
    blobs.objects[data.object_key] = b"heron colony"
    await _handle(index_pool, blobs, data, "document.stored")
    [event] = await _outbox(index_pool, data.document_id)
    assert (event["topic"], event["key"], event["type"], event["source"]) == (
        "depot.index.v1",
        str(data.document_id),
        "document.indexed",
        "depot/indexer",
    )
    assert event["data"] == {
        "document_id": str(data.document_id),
        "owner_id": "h-ivy",
        "version": 2,
        "text_chars": len("heron colony"),
    }
    await _handle(index_pool, blobs, data, "document.stored")  # the same version again: no change, no event
    assert len(await _outbox(index_pool, data.document_id)) == 1


async def test_the_event_and_the_entry_share_one_transaction(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """When the consumer's transaction rolls back, neither the index entry nor its event remains."""
    data = _stored("h-jay")
    blobs.objects[data.object_key] = b"kestrel"
    _, handler = build_handlers(blobs, NoDocuments(), max_object_bytes=64, max_text_chars=1000)["document.stored"]
    event = CloudEvent[Any](source="test", type="document.stored", subject=str(data.document_id), data=data)

    async def handle_then_fail() -> None:
        async with index_pool.acquire() as conn, conn.transaction():
            await handler(cast(asyncpg.Connection, conn), event)
            raise RuntimeError("the consumer's transaction fails after the handler")

    with pytest.raises(RuntimeError):
        await handle_then_fail()
    assert await repository.version_of(index_pool, data.document_id) is None
    assert await _outbox(index_pool, data.document_id) == []


async def test_missing_object_indexes_by_filename_only(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """A stored document whose object is gone is still indexed by its filename, and reported index_failed."""
    data = _stored("h-bob", filename="tax-return.pdf")
    await _handle(index_pool, blobs, data, "document.stored")
    assert await _ids(index_pool, "h-bob", "tax") == {data.document_id}
    [event] = await _outbox(index_pool, data.document_id)
    assert event["type"] == "document.index_failed"
    assert event["data"] == {
        "document_id": str(data.document_id),
        "owner_id": "h-bob",
        "version": 2,
        "reason": "object_missing",
    }


async def test_unreadable_pdf_is_findable_by_filename_and_reported(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """A PDF whose text cannot be extracted is indexed by filename and reported document.index_failed with why."""
    data = _stored("h-kim", filename="invoice-march.pdf", content_type="application/pdf")
    blobs.objects[data.object_key] = b"%PDF-1.4\nnot really a pdf"
    await _handle(index_pool, blobs, data, "document.stored")
    assert await _ids(index_pool, "h-kim", "invoice") == {data.document_id}
    [event] = await _outbox(index_pool, data.document_id)
    assert event["type"] == "document.index_failed"
    assert event["data"]["reason"].startswith("pdf_unreadable: ")


async def test_stale_stored_skips_the_download(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """A stored event at or below the indexed version neither reads S3 nor changes the entry."""
    data = _stored("h-carol", version=3)
    blobs.objects[data.object_key] = b"original"
    await _handle(index_pool, blobs, data, "document.stored")
    blobs.reads.clear()
    await _handle(index_pool, blobs, _stored("h-carol", version=2, document_id=data.document_id), "document.stored")
    assert blobs.reads == []
    assert await repository.version_of(index_pool, data.document_id) == 3
    assert [event["data"]["version"] for event in await _outbox(index_pool, data.document_id)] == [3]


async def test_deleted_then_failed_remove_from_search(index_pool: asyncpg.Pool, blobs: FakeBlobs) -> None:
    """document.deleted and document.failed both take a document out of search."""
    kept, deleted, failed = (_stored("h-dan") for _ in range(3))
    for data in (kept, deleted, failed):
        blobs.objects[data.object_key] = b"walrus"
        await _handle(index_pool, blobs, data, "document.stored")
    await _handle(
        index_pool,
        blobs,
        DocumentDeleted(document_id=deleted.document_id, owner_id="h-dan", version=3),
        "document.deleted",
    )
    await _handle(
        index_pool,
        blobs,
        DocumentFailed(document_id=failed.document_id, owner_id="h-dan", reason="lost"),
        "document.failed",
    )
    assert await _ids(index_pool, "h-dan", "walrus") == {kept.document_id}


@pytest.fixture(scope="module")
async def search_url(index_pool: asyncpg.Pool, index_database_url: str) -> AsyncIterator[str]:
    """Base URL of a running search API on the module's database."""
    settings = _settings(index_database_url)
    async with serve(build_app(settings)) as url:
        yield url


def _auth(owner: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, owner)}"}


async def test_search_api_pages_and_validates(index_pool: asyncpg.Pool, blobs: FakeBlobs, search_url: str) -> None:
    """GET /v1/search is authenticated, owner-scoped, paged, and rejects bad input."""
    for _ in range(3):
        data = _stored("h-erin")
        blobs.objects[data.object_key] = b"otter otter"
        await _handle(index_pool, blobs, data, "document.stored")
    async with httpx.AsyncClient(base_url=search_url) as client:
        assert (await client.get("/v1/search", params={"q": "otter"})).status_code == 401
        missing = await client.get("/v1/search", headers=_auth("h-erin"))
        assert (missing.status_code, missing.json()["error"]) == (422, "validation_error")
        blank = await client.get("/v1/search", params={"q": "  "}, headers=_auth("h-erin"))
        assert blank.status_code == 422
        bad = await client.get("/v1/search", params={"q": "otter", "cursor": "!!"}, headers=_auth("h-erin"))
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_cursor")
        assert (
            await client.get("/v1/search", params={"q": "otter", "limit": 101}, headers=_auth("h-erin"))
        ).status_code == 422
        first = (await client.get("/v1/search", params={"q": "otter", "limit": 2}, headers=_auth("h-erin"))).json()
        assert len(first["hits"]) == 2
        assert first["next_cursor"]
        assert set(first["hits"][0]) == {"document_id", "filename", "snippet", "score"}
        assert "<b>otter</b>" in first["hits"][0]["snippet"]
        second = (
            await client.get(
                "/v1/search",
                params={"q": "otter", "limit": 2, "cursor": first["next_cursor"]},
                headers=_auth("h-erin"),
            )
        ).json()
        assert len(second["hits"]) == 1
        assert second["next_cursor"] is None
        other = (await client.get("/v1/search", params={"q": "otter"}, headers=_auth("h-frank"))).json()
        assert other == {"hits": [], "next_cursor": None}


async def test_s3_blob_reader_reads_prefix_missing_and_empty(s3_endpoint: str, index_database_url: str) -> None:
    """The S3 adapter returns a capped prefix, b"" for an empty object, BlobNotFound when absent."""
    settings = _settings(
        index_database_url,
        s3_bucket=f"idx-{secrets.token_hex(4)}",
        s3_endpoint=s3_endpoint,
        AWS_ACCESS_KEY_ID="depot-test",
        AWS_SECRET_ACCESS_KEY="depot-test-secret",
    )
    async with s3_client(settings) as s3:
        await ensure_bucket(s3, settings.s3_bucket)
        await s3.put_object(Bucket=settings.s3_bucket, Key="documents/a", Body=b"0123456789")
        await s3.put_object(Bucket=settings.s3_bucket, Key="documents/empty", Body=b"")
        reader = S3BlobReader(object_store(settings))
        assert await reader.read("documents/a", 4) == b"0123"
        assert await reader.read("documents/a", 100) == b"0123456789"
        assert await reader.read("documents/empty", 4) == b""
        with pytest.raises(BlobNotFound):
            await reader.read("documents/missing", 4)
