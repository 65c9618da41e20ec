"""Upload acknowledged → searchable: the whole pipeline under a steady upload rate.

Four service processes, started with the commands ``make dev`` runs, on a fresh database:
the upload API (``depot-upload serve``), the outbox relay (``depot-upload relay``), the
indexer (``depot-indexer consume``, a fresh consumer group at the end of
``depot.documents.v1``, ``DEPOT_CONSUMER_SESSION_TIMEOUT=2``) and the search API
(``depot-indexer serve``); every other setting is its default.

Uploads start at a steady ``rate`` per second (open loop: each on schedule, whatever the
previous ones are doing) for ``seconds``; each is a distinct ~1 KiB text document holding
one word no other document holds. From the moment its ``201`` arrives, the document is
looked for through the search API — what a user sees: one ``GET /v1/search`` asks for
every pending word at once (``w1 or w2 …``), one request at a time, ``POLL_INTERVAL``
apart — and its latency ends when the response that first lists it arrives.

Where the time goes, per document, from timestamps the services write: the relay's
``published_at`` (after Kafka acked) and the indexer's ``indexed_at`` (in its transaction),
against the wall clock of the ``201`` and of the search response.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
import httpx

from benchmarks.events import move_group_to_end, text_document, unique_word
from benchmarks.load import backend_cpu, latency_summary, percentile
from benchmarks.payload import MultipartEnvelope
from benchmarks.procfs import CpuSnapshot
from benchmarks.report import Check, Result, table
from benchmarks.stack import Api, Service, Stack, together
from depot_common.events import DOCUMENTS_TOPIC
from depot_common.kafka import ensure_topics
from depot_indexer.settings import IndexerSettings

NAME = "pipeline"
RATE = 50.0
POLL_INTERVAL = 0.02
WORDS_PER_QUERY = 40  # ~700 characters: the search API takes up to 1000
TARGET_P99_MS = 300.0
PARTITIONS = int(IndexerSettings.model_fields["documents_partitions"].default)
PATIENCE_S = 30.0  # after the last upload, how long a document may take before it counts as lost


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup: int = 10


def plan(quick: bool) -> Plan:
    return Plan(seconds=5.0) if quick else Plan(seconds=20.0)


@dataclass
class Document:
    word: str
    sent: float
    acked: float = 0.0
    acked_wall: float = 0.0
    id: str = ""
    found: float = 0.0
    found_wall: float = 0.0


@dataclass
class Tracker:
    """Documents uploaded and not yet seen in search results, and those seen."""

    pending: dict[str, Document] = field(default_factory=dict)  # by document id
    done: list[Document] = field(default_factory=list)
    polls: int = 0

    def acknowledged(self, document: Document) -> None:
        self.pending[document.id] = document

    def seen(self, document_id: str, at: float, wall: float) -> None:
        document = self.pending.pop(document_id, None)
        if document is not None:
            document.found, document.found_wall = at, wall
            self.done.append(document)


async def _poll(http: httpx.AsyncClient, search: Service, headers: dict[str, str], tracker: Tracker) -> None:
    """Look for every pending document through the search API until cancelled."""
    while True:
        pending = list(tracker.pending.values())
        for start in range(0, len(pending), WORDS_PER_QUERY):
            chunk = pending[start : start + WORDS_PER_QUERY]
            response = await http.get(
                f"{search.url}/v1/search",
                params={"q": " or ".join(document.word for document in chunk), "limit": 100},
                headers=headers,
            )
            at, wall = time.perf_counter(), time.time()
            tracker.polls += 1
            if response.status_code != 200:
                raise RuntimeError(f"search API answered {response.status_code}: {response.text[:300]}")
            for hit in response.json()["hits"]:
                tracker.seen(hit["document_id"], at, wall)
        await asyncio.sleep(POLL_INTERVAL)


async def _upload(http: httpx.AsyncClient, api: Api, number: int, tracker: Tracker) -> Document:
    document = Document(word=unique_word(), sent=time.perf_counter())
    envelope = MultipartEnvelope(filename=f"note-{number}.txt", content_type="text/plain")
    data = text_document(number, document.word)
    response = await http.post(
        f"{api.url}/v1/documents", content=envelope.body(data), headers=api.headers() | envelope.headers(len(data))
    )
    document.acked, document.acked_wall = time.perf_counter(), time.time()
    if response.status_code != 201:
        raise RuntimeError(f"upload API answered {response.status_code}: {response.text[:300]}")
    document.id = response.json()["id"]
    tracker.acknowledged(document)
    return document


async def _steady(http: httpx.AsyncClient, api: Api, tracker: Tracker, count: int, rate: float) -> list[Document]:
    """Start ``count`` uploads ``1/rate`` s apart, each on schedule; wait for them all."""
    started = time.perf_counter()
    tasks = []
    for number in range(count):
        delay = started + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_upload(http, api, number, tracker)))
    return list(await asyncio.gather(*tasks))


async def _all_found(tracker: Tracker, services: list[Service], poller: asyncio.Task[None], patience: float) -> None:
    """Wait until no document is pending, or ``patience`` runs out; fail when a process or the poller died."""
    deadline = time.monotonic() + patience
    while tracker.pending and time.monotonic() < deadline:
        for service in services:
            service.check_alive()
        if poller.done():
            poller.result()  # raises what stopped it
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Measured:
    documents: list[Document]
    lost: int
    elapsed_s: float
    upload_span_s: float
    cpu_s: dict[str, float]
    polls: int
    stages: dict[str, list[float]]
    indexed_per_s: float


async def _stages(database_url: str, documents: list[Document]) -> tuple[dict[str, list[float]], float]:
    """Per-document stage durations from the services' own timestamps, and the indexing rate.

    The rate is documents indexed per second between the first and the last ``indexed_at``:
    below the upload rate, a backlog builds up and every latency grows with the run's length.
    """
    conn = await asyncpg.connect(database_url)
    try:
        ids = [uuid.UUID(document.id) for document in documents]
        published = {
            row["key"]: row["at"]
            for row in await conn.fetch(
                "SELECT key, extract(epoch FROM published_at)::float8 AS at FROM upload.outbox"
                " WHERE key = ANY($1::text[])",
                [document.id for document in documents],
            )
        }
        indexed = {
            str(row["document_id"]): row["at"]
            for row in await conn.fetch(
                "SELECT document_id, extract(epoch FROM indexed_at)::float8 AS at FROM search.index_entries"
                " WHERE document_id = ANY($1::uuid[])",
                ids,
            )
        }
    finally:
        await conn.close()
    stages: dict[str, list[float]] = {
        "201 → relay marked it published (Kafka acked)": [],
        "published → indexer committed it": [],
        "indexed → search response listing it": [],
    }
    for document in documents:
        if document.id in published and document.id in indexed:
            marks = (document.acked_wall, published[document.id], indexed[document.id], document.found_wall)
            for name, start, end in zip(stages, marks, marks[1:], strict=False):
                stages[name].append(end - start)
    times = sorted(indexed.values())
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    return stages, rate


async def _measure(stack: Stack, database_url: str, api: Api, services: dict[str, Service], steps: Plan) -> Measured:
    tracker = Tracker()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        poller = asyncio.create_task(_poll(http, services["search"], api.headers(), tracker))
        try:
            await _steady(http, api, tracker, steps.warmup, RATE)
            await _all_found(tracker, list(services.values()), poller, patience=120)
            if tracker.pending:
                raise RuntimeError(f"{len(tracker.pending)} warm-up documents never became searchable")
            tracker.done.clear()
            tracker.polls = 0
            pids = {name: service.pid for name, service in services.items()} | {
                "s3": stack.s3_pid,
                "kafka": stack.kafka_pid,
                "client": os.getpid(),
            }
            backends = await backend_cpu(database_url)
            before = CpuSnapshot.take(pids)
            started = time.perf_counter()
            documents = await _steady(http, api, tracker, round(RATE * steps.seconds), RATE)
            upload_span = max(document.sent for document in documents) - started
            await _all_found(tracker, list(services.values()), poller, patience=PATIENCE_S)
            elapsed = time.perf_counter() - started
            cpu = CpuSnapshot.take(pids).since(before)
            cpu["postgres"] = sum(
                used - backends.get(pid, 0.0) for pid, used in (await backend_cpu(database_url)).items()
            )
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
    stages, indexed_per_s = await _stages(database_url, [document for document in documents if document.found])
    return Measured(
        documents=documents,
        lost=len(tracker.pending),
        elapsed_s=elapsed,
        upload_span_s=upload_span,
        cpu_s=cpu,
        polls=tracker.polls,
        stages=stages,
        indexed_per_s=indexed_per_s,
    )


async def run(stack: Stack, *, quick: bool) -> Result:
    steps = plan(quick)
    bootstrap = [stack.kafka_bootstrap]
    group = f"bench-pipeline-{secrets.token_hex(4)}"
    await ensure_topics(bootstrap, {DOCUMENTS_TOPIC: PARTITIONS})
    await move_group_to_end(bootstrap, DOCUMENTS_TOPIC, group)
    async with stack.s3():
        pass  # the bucket exists before the search API's readiness checks it
    async with stack.database() as database_url:
        starting = together(
            stack.api(database_url=database_url),
            stack.service("outbox-relay", ["-m", "depot_upload", "relay"], database_url=database_url),
            stack.service(
                "indexer",
                ["-m", "depot_indexer", "consume"],
                database_url=database_url,
                consumer_group=group,
                consumer_session_timeout="2",
            ),
            stack.service("search-api", ["-m", "depot_indexer", "serve"], http=True, database_url=database_url),
        )
        async with starting as (api, relay, indexer, search):
            services = {
                "api": Service("upload-api", api.process, api.url),
                "relay": relay,
                "indexer": indexer,
                "search": search,
            }
            measured = await _measure(stack, database_url, api, services, steps)
    return _report(measured, steps)


def _report(measured: Measured, steps: Plan) -> Result:
    result = Result(NAME)
    found = [document for document in measured.documents if document.found]
    end_to_end = [document.found - document.acked for document in found]
    uploads = [document.acked - document.sent for document in measured.documents]
    lost_latency = [float("inf")] * measured.lost  # a lost document is slower than any found one
    view = table(
        f"Upload acknowledged → searchable at {RATE:.0f} uploads/s for {steps.seconds:.0f} s "
        f"({len(measured.documents)} text documents), upload API + relay + indexer + search API processes",
        ["span", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    rows = {
        "201 → listed by the search API": end_to_end + lost_latency,
        **measured.stages,
        "upload request (send → 201)": uploads,
    }
    for name, values in rows.items():
        view.add_row(
            name,
            str(len(values)),
            *(f"{percentile(values, q) * 1000:.1f}" for q in (50, 90, 99)),
            f"{max(values) * 1000:.1f}" if values else "",
        )
    result.tables.append(view)
    cores = table("CPU during the run (cores)", ["process", "cores"])
    for name, used in sorted(measured.cpu_s.items(), key=lambda item: -item[1]):
        cores.add_row(name if name != "machine" else "machine: busy", f"{used / measured.elapsed_s:.2f}")
    watched = sum(used for name, used in measured.cpu_s.items() if name != "machine")
    cores.add_row(
        "other (PostgreSQL, anything else)", f"{(measured.cpu_s['machine'] - watched) / measured.elapsed_s:.2f}"
    )
    result.tables.append(cores)
    quarter = max(1, len(found) // 4)
    by_upload = sorted(found, key=lambda document: document.sent)
    first, last = by_upload[:quarter], by_upload[-quarter:]
    upload_rate = (len(measured.documents) - 1) / measured.upload_span_s
    result.figures = {
        "rate_per_s": RATE,
        "uploads": len(measured.documents),
        "achieved_upload_rate_per_s": round(upload_rate, 2),
        "indexed_per_s": round(measured.indexed_per_s, 2),
        "p50_ms_first_quarter": round(percentile([d.found - d.acked for d in first], 50) * 1000, 1),
        "p50_ms_last_quarter": round(percentile([d.found - d.acked for d in last], 50) * 1000, 1),
        "lost_after_s": {"count": measured.lost, "patience_s": PATIENCE_S},
        "poll_interval_s": POLL_INTERVAL,
        "search_requests": measured.polls,
        "acknowledged_to_searchable": latency_summary(end_to_end) | {"lost": measured.lost},
        "stages": {name: latency_summary(values) for name, values in measured.stages.items()},
        "upload_request": latency_summary(uploads),
        "cpu_cores": {name: round(used / measured.elapsed_s, 2) for name, used in measured.cpu_s.items()},
    }
    result.notes.append(
        f"uploads started at {upload_rate:.1f}/s, indexed at {measured.indexed_per_s:.1f}/s (first to last "
        f"indexed_at); p50 of the first quarter of uploads {result.figures['p50_ms_first_quarter']:.0f} ms, of "
        f"the last {result.figures['p50_ms_last_quarter']:.0f} ms (growing = a backlog builds up)."
    )
    p99 = percentile(end_to_end + lost_latency, 99) * 1000
    result.checks.append(Check("201 → searchable p99", p99, TARGET_P99_MS, "ms", higher_is_better=False))
    result.notes.append(
        f"searchable = first GET /v1/search response listing the document (one request at a time for every "
        f"pending word, {POLL_INTERVAL * 1000:.0f} ms apart: adds up to that much plus one request); "
        f"{measured.polls} search requests during the run. Stages compare wall clocks: the 201's arrival, "
        "upload.outbox.published_at (the relay, after the acks), search.index_entries.indexed_at (in the "
        "indexer's transaction, just before its commit), the search response's arrival."
    )
    return result
