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

Where the time goes, per document, from the timestamp the indexer writes (``indexed_at``,
in its transaction) against the wall clock of the ``201`` and of the search response. (The
relay deletes an outbox row once Kafka acked it: its share is the relay benchmark's
commit → consumer latency.)

Two phases on the same processes, each with its target "201 → searchable p99 < 300 ms" and
a backlog check (:class:`Backlog`: indexed rate over upload rate >= ``KEPT_UP``; also shown,
the median latency of the last quarter of uploads against the first, and how many documents
were not yet searchable when the last upload was acknowledged):

1. ``RATE`` (50) uploads/s.
2. The highest sustained rate. A probe measures the upload API's highest rate with the whole
   pipeline running: ``PROBE_CONCURRENCY`` uploads at a time, closed loop (each starts when
   one ends), for ``probe_seconds``; the probe's documents are left to become searchable,
   and the rate they were indexed at (first to last ``indexed_at``) is the indexer's under
   that load. The phase then runs open loop at ``SUSTAINED_FRACTION`` (0.8) of the slower of
   the two: at the full closed-loop rate the arrivals leave the busiest process no idle time,
   so any pause becomes a backlog that never drains; below it, the backlog check says whether
   the pipeline kept up.

``--quick``: phases of 5 s and a 2 s probe (the whole benchmark ~40 s); otherwise 20 s and 5 s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
PROBE_CONCURRENCY = 16  # the upload benchmark's concurrency
SUSTAINED_FRACTION = 0.8  # of the probed highest rate: the second phase's open-loop rate (see the note)
KEPT_UP = 0.95  # indexed/uploaded rate at or above which no backlog grew


@dataclass(frozen=True)
class Plan:
    seconds: float  # of each phase
    probe_seconds: float
    warmup: int = 10


def plan(quick: bool) -> Plan:
    return Plan(seconds=5.0, probe_seconds=2.0) if quick else Plan(seconds=20.0, probe_seconds=5.0)


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


async def _steady(
    http: httpx.AsyncClient, api: Api, tracker: Tracker, numbers: Iterator[int], count: int, rate: float
) -> list[Document]:
    """Start ``count`` uploads ``1/rate`` s apart, each on schedule; wait for them all."""
    started = time.perf_counter()
    tasks = []
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_upload(http, api, next(numbers), tracker)))
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


async def _stages(database_url: str, documents: list[Document]) -> tuple[dict[str, list[float]], float]:
    """Per-document stage durations from the services' own timestamps, and the indexing rate.

    The rate is documents indexed per second between the first and the last ``indexed_at``:
    below the upload rate, a backlog builds up and every latency grows with the run's length.
    """
    conn = await asyncpg.connect(database_url)
    try:
        ids = [uuid.UUID(document.id) for document in documents]
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
        "201 → indexer committed it (relay, Kafka, indexer)": [],
        "indexed → search response listing it": [],
    }
    for document in documents:
        if document.id in indexed:
            marks = (document.acked_wall, indexed[document.id], document.found_wall)
            for name, start, end in zip(stages, marks, marks[1:], strict=False):
                stages[name].append(end - start)
    times = sorted(indexed.values())
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    return stages, rate


@dataclass(frozen=True)
class Backlog:
    """Whether the pipeline kept up with the uploads of a phase.

    ``indexed_per_s`` over ``upload_per_s``: below 1, documents were uploaded faster than they
    were indexed, and the difference piled up (the indexer then drains it after the last
    upload, at its own pace, which stretches the indexing span). The median latency of the
    last quarter of uploads against the first's shows the same pile-up as a trend, and
    ``lag_at_end`` counts the documents acknowledged but not yet searchable when the last
    upload's 201 arrived; without a backlog it stays near ``upload_per_s`` times the mean
    latency (Little's law).
    """

    upload_per_s: float
    indexed_per_s: float
    p50_first_quarter_s: float
    p50_last_quarter_s: float
    lag_at_end: int

    @property
    def kept_up(self) -> float:
        return self.indexed_per_s / self.upload_per_s if self.upload_per_s else 0.0

    @classmethod
    def of(cls, found: list[Document], *, upload_per_s: float, indexed_per_s: float, lag_at_end: int) -> Backlog:
        by_upload = sorted(found, key=lambda document: document.sent)
        quarter = max(1, len(by_upload) // 4)
        first, last = by_upload[:quarter], by_upload[-quarter:]
        return cls(
            upload_per_s=upload_per_s,
            indexed_per_s=indexed_per_s,
            p50_first_quarter_s=percentile([d.found - d.acked for d in first], 50),
            p50_last_quarter_s=percentile([d.found - d.acked for d in last], 50),
            lag_at_end=lag_at_end,
        )


@dataclass(frozen=True)
class Measured:
    """One phase: uploads at ``rate`` per second for ``seconds``."""

    label: str
    rate: float
    seconds: float
    documents: list[Document]
    lost: int
    elapsed_s: float
    upload_span_s: float
    cpu_s: dict[str, float]
    polls: int
    stages: dict[str, list[float]]
    indexed_per_s: float
    lag_at_end: int

    @property
    def found(self) -> list[Document]:
        return [document for document in self.documents if document.found]

    @property
    def upload_per_s(self) -> float:
        return (len(self.documents) - 1) / self.upload_span_s if self.upload_span_s > 0 else 0.0

    @property
    def acked_per_s(self) -> float:
        """201s per second, first to last: below :attr:`upload_per_s`, the upload API itself fell behind."""
        acked = [document.acked for document in self.documents]
        span = max(acked) - min(acked) if acked else 0.0
        return (len(acked) - 1) / span if span > 0 else 0.0

    @property
    def backlog(self) -> Backlog:
        return Backlog.of(
            self.found, upload_per_s=self.upload_per_s, indexed_per_s=self.indexed_per_s, lag_at_end=self.lag_at_end
        )


@dataclass(frozen=True)
class Probe:
    """The upload API's highest rate with the whole pipeline running (closed loop), and the
    rate the indexer indexed those documents at (first to last ``indexed_at``)."""

    uploads: int
    elapsed_s: float
    concurrency: int
    indexed_per_s: float = math.inf

    @property
    def per_s(self) -> float:
        return self.uploads / self.elapsed_s

    @property
    def pipeline_per_s(self) -> float:
        """The slower of the two: what the whole pipeline did while uploads ran flat out."""
        return min(self.per_s, self.indexed_per_s)


def sustained_rate(probe: Probe) -> float:
    """The open-loop rate of the second phase: ``SUSTAINED_FRACTION`` of the probed pipeline rate, whole uploads/s."""
    return float(max(1, math.floor(probe.pipeline_per_s * SUSTAINED_FRACTION)))


class Run:
    """The services of one pipeline run, the search poller, and the phases measured on them."""

    def __init__(
        self, stack: Stack, database_url: str, api: Api, services: dict[str, Service], http: httpx.AsyncClient
    ) -> None:
        self.stack, self.database_url, self.api, self.services, self.http = stack, database_url, api, services, http
        self.tracker = Tracker()
        self.numbers = itertools.count()
        self.pids = {name: service.pid for name, service in services.items()} | {
            "s3": stack.s3_pid,
            "kafka": stack.kafka_pid,
            "client": os.getpid(),
        }

    async def steady(self, count: int, rate: float) -> list[Document]:
        return await _steady(self.http, self.api, self.tracker, self.numbers, count, rate)

    async def drained(self, poller: asyncio.Task[None], what: str) -> None:
        """Wait until every document uploaded so far is searchable; then forget them."""
        await _all_found(self.tracker, list(self.services.values()), poller, patience=120)
        if self.tracker.pending:
            raise RuntimeError(f"{len(self.tracker.pending)} {what} documents never became searchable")
        self.forget()

    def forget(self) -> None:
        self.tracker.pending.clear()
        self.tracker.done.clear()
        self.tracker.polls = 0

    async def probe(self, poller: asyncio.Task[None], seconds: float, concurrency: int) -> Probe:
        """``concurrency`` uploads at a time, each starting when one ends, for ``seconds``; then
        wait until they are all searchable."""
        deadline = time.perf_counter() + seconds
        documents: list[Document] = []

        async def worker() -> None:
            while time.perf_counter() < deadline:
                documents.append(await _upload(self.http, self.api, next(self.numbers), self.tracker))

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        elapsed = time.perf_counter() - started
        await self.drained(poller, "probe")
        _, indexed_per_s = await _stages(self.database_url, documents)
        return Probe(uploads=len(documents), elapsed_s=elapsed, concurrency=concurrency, indexed_per_s=indexed_per_s)

    async def phase(self, poller: asyncio.Task[None], label: str, rate: float, seconds: float) -> Measured:
        backends = await backend_cpu(self.database_url)
        before = CpuSnapshot.take(self.pids)
        started = time.perf_counter()
        documents = await self.steady(round(rate * seconds), rate)
        lag_at_end = len(self.tracker.pending)
        upload_span = max(document.sent for document in documents) - min(document.sent for document in documents)
        await _all_found(self.tracker, list(self.services.values()), poller, patience=PATIENCE_S)
        elapsed = time.perf_counter() - started
        cpu = CpuSnapshot.take(self.pids).since(before)
        cpu["postgres"] = sum(
            used - backends.get(pid, 0.0) for pid, used in (await backend_cpu(self.database_url)).items()
        )
        lost = len(self.tracker.pending)
        polls = self.tracker.polls
        stages, indexed_per_s = await _stages(self.database_url, [document for document in documents if document.found])
        return Measured(
            label=label,
            rate=rate,
            seconds=seconds,
            documents=documents,
            lost=lost,
            elapsed_s=elapsed,
            upload_span_s=upload_span,
            cpu_s=cpu,
            polls=polls,
            stages=stages,
            indexed_per_s=indexed_per_s,
            lag_at_end=lag_at_end,
        )


async def _measure(run: Run, steps: Plan) -> tuple[list[Measured], Probe]:
    poller = asyncio.create_task(_poll(run.http, run.services["search"], run.api.headers(), run.tracker))
    try:
        await run.steady(steps.warmup, RATE)
        await run.drained(poller, "warm-up")
        steady = await run.phase(poller, f"{RATE:.0f} uploads/s", RATE, steps.seconds)
        run.forget()  # a lost document is counted in its phase; the next one starts afresh
        probe = await run.probe(poller, steps.probe_seconds, PROBE_CONCURRENCY)
        rate = sustained_rate(probe)
        highest = await run.phase(
            poller, f"{rate:.0f} uploads/s ({SUSTAINED_FRACTION:g} x highest)", rate, steps.seconds
        )
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    return [steady, highest], probe


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
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=64)
        async with starting as (api, relay, indexer, search), httpx.AsyncClient(timeout=60, limits=limits) as http:
            services = {
                "api": Service("upload-api", api.process, api.url),
                "relay": relay,
                "indexer": indexer,
                "search": search,
            }
            phases, probe = await _measure(Run(stack, database_url, api, services, http), steps)
    return _report(phases, probe, steps)


def _report(phases: list[Measured], probe: Probe, steps: Plan) -> Result:
    result = Result(NAME)
    for measured in phases:
        _report_phase(result, measured)
    steady, highest = phases
    result.figures |= _figures(steady)  # the 50/s phase's figures stay where they were
    result.figures["highest_sustained"] = _figures(highest) | {
        "probe": {
            "concurrency": probe.concurrency,
            "seconds": round(probe.elapsed_s, 2),
            "uploads": probe.uploads,
            "uploads_per_s": round(probe.per_s, 2),
            "indexed_per_s": round(probe.indexed_per_s, 2),
        },
        "fraction_of_probe": SUSTAINED_FRACTION,
    }
    cores = table(
        "CPU during the pipeline phases (cores)", ["process", *(f"at {measured.rate:.0f}/s" for measured in phases)]
    )
    names = sorted(steady.cpu_s, key=lambda name: -steady.cpu_s[name])
    for name in names:
        cores.add_row(
            name if name != "machine" else "machine: busy",
            *(f"{measured.cpu_s[name] / measured.elapsed_s:.2f}" for measured in phases),
        )
    cores.add_row("other (PostgreSQL, anything else)", *(f"{_other_cores(measured):.2f}" for measured in phases))
    result.tables.append(cores)
    result.notes.append(
        f"highest sustained rate: a probe uploaded {PROBE_CONCURRENCY} documents at a time (closed loop) for "
        f"{probe.elapsed_s:.1f} s with the whole pipeline running: the upload API took {probe.per_s:.1f}/s, the "
        f"indexer indexed them at {probe.indexed_per_s:.1f}/s; the second phase runs open loop at "
        f"{SUSTAINED_FRACTION:g} of the slower ({highest.rate:.0f}/s): at the full closed-loop rate arrivals leave "
        "the busiest process no idle time, so any pause (a GC, a rebalance, a neighbour on the machine) becomes a "
        "backlog that never drains; the backlog check says whether this rate was sustained."
    )
    result.notes.append(
        f"searchable = first GET /v1/search response listing the document (one request at a time for every "
        f"pending word, {POLL_INTERVAL * 1000:.0f} ms apart: adds up to that much plus one request). Stages "
        "compare wall clocks: the 201's arrival, search.index_entries.indexed_at (in the indexer's transaction, "
        "just before its commit), the search response's arrival."
    )
    return result


def _other_cores(measured: Measured) -> float:
    watched = sum(used for name, used in measured.cpu_s.items() if name != "machine")
    return (measured.cpu_s["machine"] - watched) / measured.elapsed_s


def _report_phase(result: Result, measured: Measured) -> None:
    end_to_end = [document.found - document.acked for document in measured.found]
    uploads = [document.acked - document.sent for document in measured.documents]
    lost_latency = [float("inf")] * measured.lost  # a lost document is slower than any found one
    view = table(
        f"Upload acknowledged → searchable at {measured.label} for {measured.seconds:.0f} s "
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
    backlog = measured.backlog
    mean = sum(end_to_end) / len(end_to_end) if end_to_end else math.nan
    result.notes.append(
        f"at {measured.label}: uploads started at {backlog.upload_per_s:.1f}/s, acknowledged at "
        f"{measured.acked_per_s:.1f}/s (first to last 201), indexed at "
        f"{backlog.indexed_per_s:.1f}/s (first to last indexed_at) = {backlog.kept_up:.2f}; p50 of the first "
        f"quarter of uploads {backlog.p50_first_quarter_s * 1000:.0f} ms, of the last "
        f"{backlog.p50_last_quarter_s * 1000:.0f} ms; {backlog.lag_at_end} not yet searchable when the last "
        f"upload was acknowledged (steady state ≈ rate x mean latency = {backlog.upload_per_s * mean:.1f}); "
        f"{measured.lost} lost after {PATIENCE_S:.0f} s; {measured.polls} search requests."
    )
    p99 = percentile(end_to_end + lost_latency, 99) * 1000
    result.checks.append(
        Check(f"201 → searchable p99 at {measured.label}", p99, TARGET_P99_MS, "ms", higher_is_better=False)
    )
    result.checks.append(
        Check(f"no growing backlog at {measured.label}: indexed/uploaded rate", backlog.kept_up, KEPT_UP)
    )


def _figures(measured: Measured) -> dict[str, Any]:
    backlog = measured.backlog
    end_to_end = [document.found - document.acked for document in measured.found]
    uploads = [document.acked - document.sent for document in measured.documents]
    return {
        "rate_per_s": measured.rate,
        "seconds": measured.seconds,
        "uploads": len(measured.documents),
        "achieved_upload_rate_per_s": round(backlog.upload_per_s, 2),
        "acknowledged_per_s": round(measured.acked_per_s, 2),
        "indexed_per_s": round(backlog.indexed_per_s, 2),
        "indexed_over_uploaded": round(backlog.kept_up, 3),
        "p50_ms_first_quarter": round(backlog.p50_first_quarter_s * 1000, 1),
        "p50_ms_last_quarter": round(backlog.p50_last_quarter_s * 1000, 1),
        "not_searchable_at_last_ack": backlog.lag_at_end,
        "lost_after_s": {"count": measured.lost, "patience_s": PATIENCE_S},
        "poll_interval_s": POLL_INTERVAL,
        "search_requests": measured.polls,
        "acknowledged_to_searchable": latency_summary(end_to_end) | {"lost": measured.lost},
        "stages": {name: latency_summary(values) for name, values in measured.stages.items()},
        "upload_request": latency_summary(uploads),
        "cpu_cores": {name: round(used / measured.elapsed_s, 2) for name, used in measured.cpu_s.items()},
    }
