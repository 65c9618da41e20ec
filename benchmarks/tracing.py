"""Tracing overhead: ``POST /v1/documents`` throughput with OpenTelemetry on against off.

Upload API processes of the same code run side by side: ``off`` without
``OTEL_EXPORTER_OTLP_ENDPOINT`` (no SDK, no instrumentation: the default), ``on`` exporting
every span over OTLP/HTTP to a receiver in this process (which decodes and counts them, so
the export really happens). Same payloads, concurrency and bucket, interleaved round by
round, the bucket emptied before every phase. The figure is the ratio of ``on`` to ``off``; a
third API, ``on, 10% sampled`` (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``0.1``),
shows the cost at a production sampling rate. The client is aiohttp, as for the upload
benchmark's ``api`` row, one session per phase.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.load import Load, Phase, measure, percentile
from benchmarks.payload import KIB, MultipartEnvelope, Payloads
from benchmarks.report import Check, Result, table
from benchmarks.stack import Api, Stack
from benchmarks.upload import _empty_bucket, _merge, http_client

NAME = "tracing"
TARGET_RATIO = 0.8
SAMPLED_TARGET = 0.9
BASELINE = "off"
SAMPLED = "on, 10% sampled"
VARIANTS = (BASELINE, "on", SAMPLED)
#: A production setting: one trace in ten recorded and exported (the others still propagate their traceparent).
SAMPLED_ENVIRONMENT = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
SIZE = 64 * KIB
CONCURRENCY = 16


@dataclass(frozen=True)
class Plan:
    rounds: int
    load: Load


def plan(quick: bool) -> Plan:
    if quick:
        return Plan(rounds=1, load=Load(concurrency=CONCURRENCY, duration_s=1.5, max_ops=2000, warmup_ops=16))
    return Plan(rounds=3, load=Load(concurrency=CONCURRENCY, duration_s=5.0, max_ops=20000, warmup_ops=32))


@dataclass
class SpanCounter:
    """What the OTLP receiver got: export requests and spans."""

    url: str
    requests: int = 0
    spans: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def otlp_receiver() -> Iterator[SpanCounter]:
    """An OTLP/HTTP trace receiver on a free loopback port that decodes and counts what it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    counter = SpanCounter(url=f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
            spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
            with counter.lock:
                counter.requests += 1
                counter.spans += spans
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        server.shutdown()
        server.server_close()


async def run(stack: Stack, *, quick: bool) -> Result:
    steps = plan(quick)
    result = Result(NAME)
    result.figures |= {"concurrency": steps.load.concurrency, "baseline": BASELINE, "payload_bytes": SIZE}
    with otlp_receiver() as receiver:
        async with (
            stack.api() as off,
            stack.api(environment={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}) as on,
            stack.api(environment={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url} | SAMPLED_ENVIRONMENT) as sampled,
            stack.s3() as s3,
        ):
            apis = {"off": off, "on": on, SAMPLED: sampled}
            phases: dict[str, list[Phase]] = {variant: [] for variant in VARIANTS}
            for _ in range(steps.rounds):
                for variant in VARIANTS:
                    await _empty_bucket(s3, stack.bucket)
                    api = apis[variant]
                    pids = {"api": api.pid, "s3": stack.s3_pid, "client": os.getpid()}
                    # a client per phase: no kept-alive connection idles across the bucket's emptying, where the
                    # server may close it as it is reused (an httpx ReadError ended a full run that way)
                    async with http_client(steps.load.concurrency) as http:
                        phases[variant].append(
                            await measure(
                                _uploads(api, http, Payloads(SIZE)), steps.load, payload_bytes=SIZE, pids=pids
                            )
                        )
            await _empty_bucket(s3, stack.bucket)
        merged = {variant: _merge(runs) for variant, runs in phases.items()}
        _report(result, merged, steps, receiver)
    return result


def _uploads(api: Api, http: aiohttp.ClientSession, payloads: Payloads) -> Any:
    """``POST /v1/documents`` as the upload benchmark's ``api`` row sends it."""
    envelope = MultipartEnvelope()
    headers = api.headers() | envelope.headers(payloads.size)
    url = f"{api.url}/v1/documents"

    async def upload(number: int) -> None:
        async with http.post(url, data=envelope.body(payloads.data(number)), headers=headers) as response:
            body = await response.read()
            if response.status != 201:
                raise RuntimeError(f"upload API answered {response.status}: {body[:300]!r}")

    return upload


def _report(result: Result, merged: dict[str, Phase], steps: Plan, receiver: SpanCounter) -> None:
    baseline = merged[BASELINE]
    view = table(
        f"Upload throughput with tracing on/off, 64 KiB payloads, concurrency {steps.load.concurrency}",
        ["tracing", "ops", "ops/s", "ratio", "p50 ms", "p99 ms", "cpu ms/op: api", "s3", "client"],
    )
    for variant, phase in merged.items():
        ratio = phase.ops_per_s / baseline.ops_per_s
        cpu_ratio = phase.cpu_ms_per_op("api") / baseline.cpu_ms_per_op("api")
        result.figures[variant] = phase.summary() | {
            "ratio_to_baseline": round(ratio, 3),
            "api_cpu_per_upload_to_baseline": round(cpu_ratio, 3),
        }
        view.add_row(
            variant,
            str(phase.ops),
            f"{phase.ops_per_s:.1f}",
            f"{ratio:.2f}",
            f"{percentile(phase.latencies_s, 50) * 1000:.1f}",
            f"{percentile(phase.latencies_s, 99) * 1000:.1f}",
            f"{phase.cpu_ms_per_op('api'):.2f}",
            f"{phase.cpu_ms_per_op('s3'):.2f}",
            f"{phase.cpu_ms_per_op('client'):.2f}",
        )
    result.tables.append(view)
    on = merged["on"]
    result.figures["spans_received"] = receiver.spans
    result.figures["export_requests"] = receiver.requests
    uploads = on.ops + steps.load.warmup_ops * steps.rounds
    result.figures["spans_per_upload"] = round(receiver.spans / uploads, 1)
    result.checks.append(
        Check("upload throughput, tracing on/off", on.ops_per_s / baseline.ops_per_s, TARGET_RATIO, "x")
    )
    result.notes.append(
        "ratio = ops/s of the API exporting every span (OTLP/HTTP to a receiver in the benchmark process, "
        "counted in spans_received; spans_per_upload estimates the sampled API's share) over the same API with "
        "tracing off. On a machine busy with other work (cores: other) throughput ratios swing from run to run; "
        "api_cpu_per_upload_to_baseline (the API process's CPU per upload, from /proc) is the steadier figure."
    )
