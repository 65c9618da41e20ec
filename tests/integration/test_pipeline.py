"""One document's whole path: HTTP upload → PostgreSQL + S3 → outbox → Kafka → index → search."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
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


async def indexed_ids(http: httpx.AsyncClient, url: str, headers: dict[str, str], *ids: str) -> list[str]:
    response = await http.get(f"{url}/v1/index/entries", params={"document_id": list(ids)}, headers=headers)
    assert response.status_code == 200, response.text
    return [item["document_id"] for item in response.json()["items"]]


async def test_index_entries_say_which_of_the_owners_documents_are_indexed(
    http: httpx.AsyncClient, upload_api: str, search_api: str, indexer: EventConsumer, auth: Auth
) -> None:
    """The console's indexed stage after a reload: an indexed document is listed for its owner only, a document
    the index does not hold is not, and after a delete it is listed no more."""
    word = f"ibis{secrets.token_hex(4)}"
    response = await upload(http, upload_api, auth("alice"), f"field notes on the {word}\n".encode())
    assert response.status_code == 201
    document_id = response.json()["id"]
    unknown = str(uuid.uuid4())
    await wait_searchable(http, search_api, auth("alice"), word, document_id)
    assert await indexed_ids(http, search_api, auth("alice"), document_id, unknown) == [document_id]
    assert await indexed_ids(http, search_api, auth("bob"), document_id) == []
    assert (await http.delete(f"{upload_api}/v1/documents/{document_id}", headers=auth("alice"))).status_code == 204
    deadline = time.monotonic() + 10
    while await indexed_ids(http, search_api, auth("alice"), document_id):
        assert time.monotonic() < deadline, "still listed as indexed 10 s after the delete"
        await asyncio.sleep(0.05)
    too_many = await http.get(
        f"{search_api}/v1/index/entries", params={"document_id": [unknown] * 101}, headers=auth("alice")
    )
    assert too_many.status_code == 422


async def test_index_entries_say_why_a_document_is_findable_by_filename_only(
    http: httpx.AsyncClient, upload_api: str, search_api: str, indexer: EventConsumer, auth: Auth
) -> None:
    """A PDF whose text cannot be extracted is indexed by filename: its entry carries document.index_failed's
    reason (what the console shows after a reload); a text document's entry carries none."""
    word = f"heron{secrets.token_hex(4)}"
    broken = await http.post(
        f"{upload_api}/v1/documents",
        headers=auth("alice"),
        files={"file": (f"{word}.pdf", b"%PDF-1.7 these are not the bytes of a PDF", "application/pdf")},
    )
    assert broken.status_code == 201, broken.text
    text = await upload(http, upload_api, auth("alice"), f"a {word} stood in the reeds\n".encode())
    assert text.status_code == 201, text.text
    broken_id, text_id = broken.json()["id"], text.json()["id"]
    await wait_searchable(http, search_api, auth("alice"), word, broken_id)
    await wait_searchable(http, search_api, auth("alice"), word, text_id)
    response = await http.get(
        f"{search_api}/v1/index/entries", params={"document_id": [broken_id, text_id]}, headers=auth("alice")
    )
    assert response.status_code == 200, response.text
    failures = {item["document_id"]: item["extraction_failure"] for item in response.json()["items"]}
    assert failures[text_id] is None
    assert str(failures[broken_id]).startswith("pdf_unreadable"), failures
