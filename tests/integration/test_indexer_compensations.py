"""The indexer executes the compensations it owns, re-checking the document when it acts."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from pydantic import BaseModel

from depot_common.consumer import EventConsumer
from depot_common.events import COMPENSATIONS_TOPIC, CloudEvent, GhostIndexEntry, Reindex, encode
from depot_common.kafka import make_producer
from depot_upload.settings import UploadSettings
from tests.integration.test_pipeline import search, wait_searchable
from tests.upload_helpers import upload

Auth = Callable[..., dict[str, str]]


async def publish(settings: UploadSettings, type_: str, data: BaseModel, key: uuid.UUID) -> uuid.UUID:
    """Publish a compensation as the reconciler's relay would; return its event id."""
    producer = make_producer(settings.kafka_servers)
    await producer.start()
    try:
        event = CloudEvent[Any](source="depot/reconciler", type=type_, subject=str(key), data=data)
        await producer.send_and_wait(COMPENSATIONS_TOPIC, value=encode(event), key=str(key).encode())
    finally:
        await producer.stop()
    return event.id


async def wait_processed(pool: asyncpg.Pool, event_id: uuid.UUID) -> None:
    """Wait until the indexer's inbox records ``event_id`` (its transaction committed)."""
    for _ in range(200):
        if await pool.fetchval("SELECT count(*) FROM search.processed_events WHERE event_id = $1", event_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"event {event_id} was not processed")


async def entry_status(pool: asyncpg.Pool, document_id: uuid.UUID) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM search.index_entries WHERE document_id = $1", document_id
    )
    return status


async def wait_for_status(pool: asyncpg.Pool, document_id: uuid.UUID, expected: str | None) -> str | None:
    status = None
    for _ in range(100):
        status = await entry_status(pool, document_id)
        if status == expected:
            break
        await asyncio.sleep(0.05)
    return status


async def stored_and_indexed(http: httpx.AsyncClient, upload_api: str, search_api: str, auth: Auth) -> uuid.UUID:
    word = f"kiwi{secrets.token_hex(4)}"
    document_id: str = (await upload(http, upload_api, auth("alice"), f"{word} notes\n".encode())).json()["id"]
    await wait_searchable(http, search_api, auth("alice"), word, document_id)
    return uuid.UUID(document_id)


async def test_reindex_restores_a_stored_document_missing_from_the_index(
    http: httpx.AsyncClient,
    upload_api: str,
    search_api: str,
    indexer: EventConsumer,
    auth: Auth,
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
) -> None:
    """compensation.reindex of a stored document whose entry vanished indexes it again at its current version."""
    document_id = await stored_and_indexed(http, upload_api, search_api, auth)
    await pg_pool.execute("DELETE FROM search.index_entries WHERE document_id = $1", document_id)
    await publish(
        upload_settings, "compensation.reindex", Reindex(document_id=document_id, run_id=uuid.uuid4()), document_id
    )
    assert await wait_for_status(pg_pool, document_id, "indexed") == "indexed"
    version = await pg_pool.fetchval("SELECT version FROM search.index_entries WHERE document_id = $1", document_id)
    assert version == await pg_pool.fetchval("SELECT version FROM upload.documents WHERE id = $1", document_id)


async def test_reindex_of_a_document_no_longer_stored_does_nothing(
    indexer: EventConsumer, pg_pool: asyncpg.Pool, upload_settings: UploadSettings, upload_api: str
) -> None:
    """A reindex planned for a document that is gone by the time it runs adds nothing to the index."""
    document_id = uuid.uuid4()
    event_id = await publish(
        upload_settings, "compensation.reindex", Reindex(document_id=document_id, run_id=uuid.uuid4()), document_id
    )
    await wait_processed(pg_pool, event_id)
    assert await entry_status(pg_pool, document_id) is None


async def test_ghost_entry_of_a_document_that_is_not_stored_is_removed(
    indexer: EventConsumer,
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
    search_api: str,
    http: httpx.AsyncClient,
    auth: Auth,
) -> None:
    """An index entry whose document does not exist is removed by compensation.ghost_index_entry."""
    ghost = uuid.uuid4()
    word = f"ghost{secrets.token_hex(4)}"
    await pg_pool.execute(
        "INSERT INTO search.index_entries (document_id, owner_id, filename, content_type, size_bytes, sha256,"
        " version, status, body, indexed_at)"
        " VALUES ($1, 'alice', 'g.txt', 'text/plain', 1, 'x', 2, 'indexed', $2, now())",
        ghost,
        word,
    )
    assert [h["document_id"] for h in await search(http, search_api, auth("alice"), word)] == [str(ghost)]
    await publish(
        upload_settings,
        "compensation.ghost_index_entry",
        GhostIndexEntry(document_id=ghost, run_id=uuid.uuid4()),
        ghost,
    )
    assert await wait_for_status(pg_pool, ghost, "removed") == "removed"
    assert await search(http, search_api, auth("alice"), word) == []


async def test_ghost_compensation_for_a_document_stored_again_is_skipped(
    http: httpx.AsyncClient,
    upload_api: str,
    search_api: str,
    indexer: EventConsumer,
    auth: Auth,
    pg_pool: asyncpg.Pool,
    upload_settings: UploadSettings,
) -> None:
    """A ghost finding that no longer holds (the document is stored) leaves the entry searchable."""
    document_id = await stored_and_indexed(http, upload_api, search_api, auth)
    ghost = GhostIndexEntry(document_id=document_id, run_id=uuid.uuid4())
    await wait_processed(pg_pool, await publish(upload_settings, "compensation.ghost_index_entry", ghost, document_id))
    assert await entry_status(pg_pool, document_id) == "indexed"
