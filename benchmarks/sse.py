"""``GET /v1/events``: event → SSE client latency, and the memory of 200 idle streams.

One upload API process (its own database) is started and waited for until its stream is
ready. Memory: its RSS idle (after one stream was opened and closed, so the code is
loaded), then with 200 idle streams of 200 owners open (each has received its
``: connected``), as a ratio to the idle RSS of the same process and as KiB per stream.
Latency: with those 200 streams still open, ``document.indexed`` events for one more
owner are produced one at a time; for each, the time from the broker's ack to its
arrival on that owner's SSE stream (parsed as a client would), beside the baseline of the
same run: the time from the ack until a plain Kafka consumer in no group (the
``make_consumer`` options the services use) sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from benchmarks.events import Observer
from benchmarks.load import latency_summary, percentile
from benchmarks.procfs import memory_kib
from benchmarks.report import Check, Result, table
from benchmarks.stack import Stack
from depot_common.auth import mint_token
from depot_common.events import INDEX_TOPIC
from depot_common.kafka import make_producer

NAME = "sse"
STREAMS = 200
TARGET_P99_MS = 1000.0
READY_TIMEOUT = 60.0


def indexed(owner: str) -> tuple[bytes, bytes]:
    """``(key, value)`` of a ``document.indexed`` event of ``owner``, as the indexer's relay publishes it."""
    document_id = str(uuid.uuid4())
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "depot/indexer",
        "type": "document.indexed",
        "subject": document_id,
        "time": "2026-03-14T09:26:54.102000Z",
        "datacontenttype": "application/json",
        "data": {"document_id": document_id, "owner_id": owner, "version": 2, "text_chars": 1234},
    }
    return document_id.encode(), json.dumps(event, separators=(",", ":")).encode()


class Stream:
    """One open ``GET /v1/events``: notes when each event id arrives."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.connected = asyncio.Event()
        self.arrived: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}

    async def pump(self) -> None:
        async for line in self.response.aiter_lines():
            if line == ": connected":
                self.connected.set()
            elif line.startswith("id: "):
                now = time.perf_counter()
                event_id = line[4:]
                self.arrived[event_id] = now
                waiter = self._waiters.pop(event_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)

    async def wait_for(self, event_id: str, patience: float) -> float:
        if event_id in self.arrived:
            return self.arrived[event_id]
        waiter = self._waiters.setdefault(event_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(waiter), patience)


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, url: str, token: str) -> AsyncIterator[Stream]:
    async with client.stream("GET", f"{url}/v1/events", headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET /v1/events answered {response.status_code}: {(await response.aread())[:300]!r}")
        stream = Stream(response)
        task = asyncio.create_task(stream.pump())
        try:
            await asyncio.wait_for(stream.connected.wait(), 30)
            yield stream
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


async def _wait_streaming(client: httpx.AsyncClient, url: str, token: str) -> None:
    """Until the API reads Kafka (503 before), with one stream opened and closed (the warm-up)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            async with open_stream(client, url, token):
                return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run(stack: Stack, *, quick: bool) -> Result:
    events = 50 if quick else 300
    result = Result(NAME)
    token = {owner: mint_token(stack.jwt_secret, owner, ttl=3600) for owner in ["probe", *map(str, range(STREAMS))]}
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
    producer = make_producer([stack.kafka_bootstrap], linger_ms=0)
    async with (
        stack.database() as database_url,
        stack.api(database_url=database_url) as api,
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as client,
    ):
        await _wait_streaming(client, api.url, token["probe"])
        await asyncio.sleep(1.0)
        idle = memory_kib(api.pid)["VmRSS"]
        async with contextlib.AsyncExitStack() as streams:
            await asyncio.gather(
                *(streams.enter_async_context(open_stream(client, api.url, token[str(n)])) for n in range(STREAMS))
            )
            await asyncio.sleep(2.0)
            with_streams = memory_kib(api.pid)["VmRSS"]

            await producer.start()
            sse_latency: list[float] = []
            kafka_latency: list[float] = []
            try:
                async with (
                    open_stream(client, api.url, token["probe"]) as stream,
                    Observer.reading([stack.kafka_bootstrap], INDEX_TOPIC, auto_offset_reset="latest") as observer,
                ):
                    await asyncio.sleep(1.0)  # the observer's partitions assigned and at the end
                    for _ in range(events):
                        key, value = indexed("probe")
                        event_id = json.loads(value)["id"]
                        await producer.send_and_wait(INDEX_TOPIC, value, key=key)
                        acked = time.perf_counter()
                        sse_latency.append(await stream.wait_for(event_id, 10) - acked)
                        kafka_latency.append(await observer.wait_for(key, 10) - acked)
            finally:
                await producer.stop()

    per_stream_kib = (with_streams - idle) / STREAMS
    result.figures = {
        "streams": STREAMS,
        "rss_mib": {
            "idle": round(idle / 1024, 1),
            f"with_{STREAMS}_idle_streams": round(with_streams / 1024, 1),
            "ratio_to_idle": round(with_streams / idle, 3),
            "kib_per_stream": round(per_stream_kib, 1),
        },
        "latency": {
            "events": events,
            "sse_client": latency_summary(sse_latency),
            "kafka_consumer_baseline": latency_summary(kafka_latency),
            "p50_ratio_to_baseline": round(percentile(sse_latency, 50) / percentile(kafka_latency, 50), 2),
            "p99_ratio_to_baseline": round(percentile(sse_latency, 99) / percentile(kafka_latency, 99), 2),
        },
    }
    memory = table(f"Upload API memory with {STREAMS} idle GET /v1/events streams", ["RSS", "MiB", "ratio"])
    memory.add_row("idle (one stream opened and closed)", f"{idle / 1024:.1f}", "1.00")
    memory.add_row(f"{STREAMS} idle streams open", f"{with_streams / 1024:.1f}", f"{with_streams / idle:.2f}")
    memory.add_row("per stream", f"{per_stream_kib:.1f} KiB", "")
    latency = table(
        f"Event → client latency, {events} events, {STREAMS} other streams open",
        ["path", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    for path, values in (("broker ack → SSE client", sse_latency), ("broker ack → Kafka consumer", kafka_latency)):
        summary: dict[str, Any] = latency_summary(values)
        latency.add_row(
            path,
            *(f"{summary[name]:.1f}" for name in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
        )
    result.tables += [memory, latency]
    result.checks.append(
        Check("event → SSE client p99", percentile(sse_latency, 99) * 1000, TARGET_P99_MS, "ms", higher_is_better=False)
    )
    return result
