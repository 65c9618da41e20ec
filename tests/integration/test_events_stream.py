"""``GET /v1/events`` on a real upload API, reading a real broker: owner isolation, the
stored → indexed sequence of an upload, a slow reader dropped while a fast one keeps up,
heartbeats, 401 and 503."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from depot_common.consumer import EventConsumer
from depot_common.events import INDEX_TOPIC
from depot_common.kafka import make_producer
from depot_common.outbox import OutboxRelay
from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.integration.test_upload_api import upload

Auth = Callable[..., dict[str, str]]

#: Per-stream buffer of the API under test: small, so a reader that stops reading overflows it soon.
BUFFER = 32


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


class Stream:
    """A client of ``GET /v1/events`` that parses every message as it arrives (as the console does with fetch)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: list[Message] = []
        self.arrivals: list[float] = []
        self.comments: list[tuple[float, str]] = []
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()

    async def pump(self) -> None:
        current = Message()
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.comments.append((time.monotonic(), line[1:].strip()))
                elif line.startswith("id: "):
                    current.id = line[4:]
                elif line.startswith("event: "):
                    current.event = line[7:]
                elif line.startswith("data: "):
                    current.data += line[6:]
                elif line == "" and current.event is not None:
                    self.messages.append(current)
                    self.arrivals.append(time.monotonic())
                    current = Message()
                self._changed.set()
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()
            self._changed.set()

    def events(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [m.json() for m in self.messages if owner is None or m.json()["data"]["owner_id"] == owner]

    async def wait_for(self, done: Callable[[Stream], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            if self.ended.is_set() or time.monotonic() > deadline:
                raise AssertionError(
                    f"stream condition not met: {len(self.messages)} messages, ended={self.ended.is_set()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.2)


@contextlib.asynccontextmanager
async def connect(url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    """An open stream, read in the background; closed on exit."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client,
        client.stream("GET", f"{url}/v1/events", headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        task = asyncio.create_task(stream.pump())
        try:
            await stream.wait_for(lambda s: bool(s.comments))  # ": connected": subscribed
            yield stream
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture(scope="module")
async def events_api(make_settings: Callable[..., Any], auth: Auth) -> AsyncIterator[str]:
    """An upload API with a 1 s heartbeat and a small per-stream buffer, ready to stream."""
    settings: UploadSettings = make_settings(
        UploadSettings, events_heartbeat_interval=1, events_client_buffer=BUFFER, max_upload_bytes=1024 * 1024
    )
    async with serve(build_app(settings)) as url, httpx.AsyncClient() as client:
        deadline = time.monotonic() + 30
        while True:  # 503 until the replica reads every partition from its end
            async with client.stream("GET", f"{url}/v1/events", headers=auth("ready-probe")) as response:
                if response.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the event stream never became ready"
            await asyncio.sleep(0.1)
        yield url


def index_failed_event(owner: str, *, reason: str = "pdf_unreadable: PdfStreamError") -> dict[str, Any]:
    """A document.index_failed CloudEvent as the indexer's relay publishes it (on depot.index.v1, which no
    consumer group reads: planting it changes no state)."""
    document_id = str(uuid.uuid4())
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "depot/indexer",
        "type": "document.index_failed",
        "subject": document_id,
        "time": "2026-03-14T09:26:53.589000Z",
        "datacontenttype": "application/json",
        "data": {"document_id": document_id, "owner_id": owner, "version": 2, "reason": reason},
    }


async def test_a_stream_needs_a_bearer_token(events_api: str) -> None:
    """No token, or an invalid one, is a 401 JSON error before any stream starts."""
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"{events_api}/v1/events")
        invalid = await client.get(f"{events_api}/v1/events", headers={"Authorization": "Bearer not-a-jwt"})
    assert (missing.status_code, missing.json()["error"]) == (401, "missing_token")
    assert (invalid.status_code, invalid.json()["error"]) == (401, "invalid_token")


async def test_each_owner_sees_only_its_own_upload_stored_then_indexed(
    events_api: str, indexer: EventConsumer, index_relay: OutboxRelay, auth: Auth, http: httpx.AsyncClient
) -> None:
    """Two owners connected: each receives document.stored then document.indexed of its own upload,
    and nothing of the other's."""
    alice, bob = f"alice-{secrets.token_hex(3)}", f"bob-{secrets.token_hex(3)}"
    async with connect(events_api, auth(alice)) as alice_stream, connect(events_api, auth(bob)) as bob_stream:
        ids = {}
        for owner in (alice, bob):
            response = await upload(http, events_api, auth(owner), f"{owner} wrote this\n".encode())
            assert response.status_code == 201, response.text
            ids[owner] = response.json()["id"]
        for owner, stream in ((alice, alice_stream), (bob, bob_stream)):

            def indexed(s: Stream, owner: str = owner) -> bool:
                return any(e["type"] == "document.indexed" and e["subject"] == ids[owner] for e in s.events())

            await stream.wait_for(indexed)
            mine = [(e["type"], e["subject"]) for e in stream.events() if e["subject"] == ids[owner]]
            assert mine == [("document.stored", ids[owner]), ("document.indexed", ids[owner])]
            assert {e["data"]["owner_id"] for e in stream.events()} == {owner}
            message = next(m for m in stream.messages if m.event == "document.indexed")
            assert message.id == message.json()["id"]
            assert message.json()["data"]["text_chars"] == len(f"{owner} wrote this\n")


async def test_events_arrive_within_a_second_of_reaching_kafka(
    events_api: str, kafka_bootstrap: str, auth: Auth
) -> None:
    """Each event is on the owner's stream within 1 s of the broker acknowledging it."""
    owner = f"gina-{secrets.token_hex(3)}"
    producer = make_producer([kafka_bootstrap])
    await producer.start()
    try:
        async with connect(events_api, auth(owner)) as stream:
            for n in range(20):
                event = index_failed_event(owner)
                await producer.send_and_wait(INDEX_TOPIC, json.dumps(event).encode(), key=event["subject"].encode())
                acked = time.monotonic()
                await stream.wait_for(lambda s, n=n: len(s.messages) > n, timeout=5)
                assert stream.messages[n].id == event["id"]
                assert stream.arrivals[n] - acked < 1.0
    finally:
        await producer.stop()


async def test_a_slow_reader_is_dropped_while_a_fast_one_gets_everything(
    events_api: str, kafka_bootstrap: str, auth: Auth
) -> None:
    """A client that stops reading is disconnected once its buffer overflows, and never gets the later
    events; another stream of the same owner receives every event meanwhile."""
    owner = f"carol-{secrets.token_hex(3)}"
    host, port = events_api.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, so the server's writes back up
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=raw, limit=1024)
    token = auth(owner)["Authorization"]
    writer.write(
        f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await reader.readuntil(b": connected")  # subscribed; from here on it reads nothing
    producer = make_producer([kafka_bootstrap])
    await producer.start()
    count = 700  # ~8 kB each: more than the kernel (4 MiB send buffer) and the server hold for one connection
    try:
        async with connect(events_api, auth(owner)) as fast:
            sent = []
            for _ in range(count):
                event = index_failed_event(owner, reason="r" * 8000)
                await producer.send(INDEX_TOPIC, json.dumps(event).encode(), key=event["subject"].encode())
                sent.append(event["id"])
            await producer.flush()
            await fast.wait_for(lambda s: len(s.messages) >= count, timeout=90)
            assert sorted(m.id or "" for m in fast.messages) == sorted(sent)
        slow = await asyncio.wait_for(reader.read(), 60)  # to EOF: the server ended the slow stream
        assert slow.endswith(b"\r\n0\r\n\r\n"), "the stream did not end"  # the last chunk of the response
        got = slow.count(b"event: document.index_failed")
        assert got < count, "the slow reader was never dropped"
    finally:
        await producer.stop()
        writer.close()


async def test_a_stream_ends_when_its_token_expires(events_api: str, token: Callable[..., str]) -> None:
    """A stream opened with a token valid 3 s ends by itself (`: token expired`) once it expired."""
    headers = {"Authorization": f"Bearer {token(f'hal-{secrets.token_hex(3)}', ttl=3)}"}
    async with connect(events_api, headers) as stream:
        await asyncio.wait_for(stream.ended.wait(), 10)
        assert stream.comments[-1][1] == "token expired"


async def test_an_idle_stream_gets_heartbeats(events_api: str, auth: Auth) -> None:
    """With no event to send, a comment heartbeat arrives at least every configured interval (1 s here)."""
    async with connect(events_api, auth(f"dave-{secrets.token_hex(3)}")) as stream:
        await stream.wait_for(lambda s: sum(text == "heartbeat" for _, text in s.comments) >= 3, timeout=10)
        times = [at for at, text in stream.comments if text == "heartbeat"]
        assert max(b - a for a, b in itertools.pairwise(times)) < 1.8
        assert stream.messages == []


async def test_the_stream_is_unavailable_until_it_reads_kafka(make_settings: Callable[..., Any], auth: Auth) -> None:
    """With Kafka unreachable the replica cannot promise a complete stream: 503 dependency_unavailable + Retry-After."""
    settings: UploadSettings = make_settings(UploadSettings, kafka_bootstrap="127.0.0.1:9")
    async with serve(build_app(settings)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/v1/events", headers=auth("erin"))
    assert response.status_code == 503
    assert response.json()["error"] == "dependency_unavailable"
    assert response.json()["dependency"] == "kafka"
    assert int(response.headers["Retry-After"]) > 0
