"""One document's whole path: HTTP upload → PostgreSQL + S3 → outbox → Kafka → index → search."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import httpx

from depot_common.consumer import EventConsumer
from tests.upload_helpers import upload

Auth = Callable[..., dict[str, str]]


async def search(http: httpx.AsyncClient, url: str, headers: dict[str, str], q: str) -> list[dict[str, object]]:
    response = await http.get(f"{url}/v1/search", params={"q": q}, headers=headers)
    assert response.status_code == 200, response.text
    hits: list[dict[str, object]] = response.json()["hits"]
    return hits


async def wait_searchable(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], q: str, document_id: str, timeout: float = 10
) -> float:
    """Seconds until ``document_id`` is a hit for ``q``; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if any(hit["document_id"] == document_id for hit in await search(http, url, headers, q)):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{document_id} not searchable for {q!r} within {timeout} s")


async def test_an_upload_becomes_searchable_by_its_owner_only(
    http: httpx.AsyncClient, upload_api: str, search_api: str, indexer: EventConsumer, auth: Auth
) -> None:
    """A word of an uploaded text file finds it through the search API within seconds; another owner finds nothing."""
    word = f"zebra{secrets.token_hex(4)}"
    response = await upload(http, upload_api, auth("alice"), f"quarterly report about {word} migration\n".encode())
    assert response.status_code == 201
    document_id = response.json()["id"]
    await wait_searchable(http, search_api, auth("alice"), word, document_id)
    [hit] = [h for h in await search(http, search_api, auth("alice"), word) if h["document_id"] == document_id]
    assert hit["filename"] == "notes.txt"
    assert f"<b>{word}</b>" in str(hit["snippet"])
    assert await search(http, search_api, auth("bob"), word) == []


async def test_search_requires_a_token(http: httpx.AsyncClient, search_api: str) -> None:
    """The search API refuses anonymous callers with 401."""
    response = await http.get(f"{search_api}/v1/search", params={"q": "anything"})
    assert response.status_code == 401
    assert response.json()["error"] == "missing_token"
