"""Upload throughput: ``POST /v1/documents`` against writing the same bytes to S3 directly.

All variants run in this process against the same moto server, at the same concurrency
and payload size, interleaved round by round (so drift hits them alike), with the bucket
emptied before every phase (so moto holds the same state at every start):

- ``api``: ``POST /v1/documents`` (a prebuilt multipart body) to the upload API, which
  streams it to S3 with its aiobotocore client and records it in PostgreSQL.
- ``s3``: aiobotocore ``PutObject`` with the client the API itself uses (same factory, same
  config). The headline baseline: it is the ceiling of the API, whose write path is this
  very call plus its own work, so the ratio is the share of S3 throughput the API keeps.
- ``s3-as-api``: the same ``PutObject`` with the API's extra arguments
  (``IfNoneMatch: *``, ``ChecksumSHA256``): separates the cost of the request's shape
  from the cost of the API.
- ``presigned``: ``PUT`` to a presigned URL (signed per operation): the lightest
  client S3 allows, i.e. what the presigned upload flow would achieve.
- ``tus``: the peer, ``@tus/server`` + ``@tus/s3-store`` (the server Supabase Storage runs)
  on the same moto endpoint and bucket, driven with the tus 1.0 protocol over httpx
  (creation-with-upload: one ``POST`` carrying the body); see :mod:`benchmarks.peers.tus`.
  The bench installs it with npm into ``~/.cache/depot-bench/`` (once). Its CPU is the node
  process's, in the ``server`` column (the API's in the api rows). After the phases of each
  size, a few uploads one at a time count the S3 requests one tus upload makes. Without
  Node.js >= 20.19 and npm the row says "skipped" and why; the other variants still run.

The HTTP client of the ``api`` and ``presigned`` rows is aiohttp (one session, a pool of
``CONCURRENCY`` connections), not httpx: the client shares the machine's 2 cores with the
servers it measures, and httpx cost 2.1-3.0 ms of CPU per 64 KiB request here against
~0.55 ms for aiohttp, CPU the API and moto then lacked (the client's cost lowers the ``api``
row's ceiling, not the ``s3`` row's, whose client is the S3 library itself). The ``tus`` row
still speaks tus over httpx (:mod:`benchmarks.peers.tus`); the 8 S3 requests per tus
upload (counted each run) bound that row, not its client, whose CPU is in its ``client`` column.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from benchmarks.load import Load, Phase, measure, percentile
from benchmarks.payload import KIB, MIB, MultipartEnvelope, Payloads
from benchmarks.peers import tus
from benchmarks.report import Check, Result, table
from benchmarks.stack import Api, Stack

NAME = "upload"
TARGET_RATIO = 0.85
BASELINE = "s3"
VARIANTS = ("api", BASELINE, "s3-as-api", "presigned")
PEER = "tus"
PEER_TARGET_LEAD = 5.0  # Depot's api ops/s over the peer's
PEER_COUNTED_UPLOADS = 8  # uploaded one at a time to count the peer's S3 requests
SIZES = (64 * KIB, MIB)
CONCURRENCY = 16


@dataclass(frozen=True)
class Plan:
    rounds: int
    load: Load


def plan(quick: bool) -> Plan:
    if quick:
        return Plan(rounds=1, load=Load(concurrency=CONCURRENCY, duration_s=1.5, max_ops=2000, warmup_ops=16))
    return Plan(rounds=2, load=Load(concurrency=CONCURRENCY, duration_s=5.0, max_ops=20000, warmup_ops=32))


Operation = Callable[[int], Awaitable[None]]


def http_client(concurrency: int) -> aiohttp.ClientSession:
    """The HTTP client of the ``api`` and ``presigned`` rows: ``concurrency`` kept-alive connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=120),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def operations(api: Api, s3: Any, http: aiohttp.ClientSession, bucket: str, payloads: Payloads) -> dict[str, Operation]:
    envelope = MultipartEnvelope()
    api_headers = api.headers() | envelope.headers(payloads.size)
    documents_url = f"{api.url}/v1/documents"

    async def via_api(number: int) -> None:
        async with http.post(documents_url, data=envelope.body(payloads.data(number)), headers=api_headers) as response:
            body = await response.read()  # read to the end: the connection goes back to the pool
            if response.status != 201:
                raise RuntimeError(f"upload API answered {response.status}: {body[:300]!r}")

    def key(number: int) -> str:
        return f"bench/{payloads.tag.hex()}/{number}"

    async def via_s3(number: int) -> None:
        await s3.put_object(
            Bucket=bucket, Key=key(number), Body=payloads.data(number), ContentType="application/octet-stream"
        )

    async def via_s3_as_api(number: int) -> None:
        data = payloads.data(number)
        await s3.put_object(
            Bucket=bucket,
            Key=key(number),
            Body=data,
            ContentType="application/octet-stream",
            IfNoneMatch="*",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        )

    async def via_presigned(number: int) -> None:
        url = await s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key(number)}, ExpiresIn=600
        )
        async with http.put(url, data=payloads.data(number)) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"presigned PUT answered {response.status}: {body[:300]!r}")

    return {"api": via_api, "s3": via_s3, "s3-as-api": via_s3_as_api, "presigned": via_presigned}


async def _empty_bucket(s3: Any, bucket: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def _merge(phases: list[Phase]) -> Phase:
    return Phase(
        ops=sum(phase.ops for phase in phases),
        payload_bytes=phases[0].payload_bytes,
        elapsed_s=sum(phase.elapsed_s for phase in phases),
        latencies_s=[latency for phase in phases for latency in phase.latencies_s],
        cpu_s={name: sum(phase.cpu_s[name] for phase in phases) for name in phases[0].cpu_s},
    )


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


async def run(stack: Stack, *, quick: bool) -> Result:
    steps = plan(quick)
    result = Result(NAME)
    result.figures["concurrency"] = steps.load.concurrency
    result.figures["baseline"] = BASELINE
    limits = httpx.Limits(max_connections=steps.load.concurrency, max_keepalive_connections=steps.load.concurrency)
    async with (
        stack.api() as api,
        stack.s3() as s3,
        http_client(steps.load.concurrency) as http,
        httpx.AsyncClient(timeout=120, limits=limits) as tus_http,
        contextlib.AsyncExitStack() as resources,
    ):
        peer = await _start_peer(stack, resources, result)
        pids = {"api": api.pid, "s3": stack.s3_pid, "client": os.getpid()} | ({PEER: peer.pid} if peer else {})
        variants = (*VARIANTS, PEER) if peer else VARIANTS
        for size in SIZES:
            phases: dict[str, list[Phase]] = {variant: [] for variant in variants}
            for _ in range(steps.rounds):
                for variant in variants:
                    await _empty_bucket(s3, stack.bucket)
                    payloads = Payloads(size)
                    choices = operations(api, s3, http, stack.bucket, payloads)
                    if peer:
                        choices[PEER] = tus.operation(tus_http, peer, payloads.data)
                    operation = choices[variant]
                    phases[variant].append(await measure(operation, steps.load, payload_bytes=size, pids=pids))
            counted = None
            if peer:
                await _empty_bucket(s3, stack.bucket)
                numbers = range(PEER_COUNTED_UPLOADS)
                data = Payloads(size).data
                counted = await tus.count_requests(
                    tus_http, peer, s3, stack.bucket, data, numbers, s3_log=stack.s3_process.log_path
                )
            await _empty_bucket(s3, stack.bucket)
            _report_size(result, size, {variant: _merge(runs) for variant, runs in phases.items()}, steps)
            _report_peer(result, size, {variant: _merge(runs) for variant, runs in phases.items()}, counted)
    result.notes.append(
        "ratio = ops/s over the s3 baseline (aiobotocore PutObject, the API's own client). CPU from /proc: ms per "
        "operation of the server (the upload API; in the tus row the node process), moto and this process; "
        "busy = cores the machine kept busy, other = busy minus those (PostgreSQL, the broker, anything else "
        "running). The outbox relay is not running. The api and presigned rows send with aiohttp, the tus row "
        "with httpx."
    )
    return result


async def _start_peer(stack: Stack, resources: contextlib.AsyncExitStack, result: Result) -> tus.TusPeer | None:
    """Start the tus peer for the whole benchmark, or note why it is skipped (None)."""
    target = tus.S3Target(
        endpoint=stack.s3_endpoint, bucket=stack.bucket, access_key=stack.access_key, secret_key=stack.secret_key
    )
    try:
        peer = await resources.enter_async_context(tus.peer(target, stack.log_dir))
    except tus.PeerUnavailable as error:
        result.figures[PEER] = {"skipped": str(error)}
        return None
    result.figures[PEER] = {
        "packages": tus.PACKAGES,
        "node": peer.node_version,
        "part_size": tus.PART_SIZE,
        "creation_with_upload": peer.creation_with_upload,
    }
    packages = ", ".join(f"{name} {version}" for name, version in tus.PACKAGES.items())
    flow = "creation-with-upload: one POST carrying the body" if peer.creation_with_upload else "POST, then PATCH"
    result.notes.append(
        f"tus = {packages} on node {peer.node_version}, S3Store on the same moto and bucket (path-style, "
        f"{tus.PART_SIZE // MIB} MiB parts), tus 1.0 over httpx ({flow}); an upload counts when its final "
        "Upload-Offset equals its size."
    )
    return peer


def _report_peer(result: Result, size: int, merged: dict[str, Phase], counted: tus.RequestCount | None) -> None:
    """The peer's row is in the size's table; here its check, its S3 requests, or why it was skipped."""
    label = _size_label(size)
    if counted is None:
        result.tables[-1].add_row(f"{PEER}: skipped", *[""] * 11)
        result.notes.append(f"{label}: the tus peer was skipped: {result.figures[PEER]['skipped']}")
        return
    lead = merged["api"].ops_per_s / merged[PEER].ops_per_s
    result.figures[label][PEER] |= {
        "api_over_tus": round(lead, 3),
        "s3_requests_per_upload": round(counted.per_upload, 2),
        "s3_requests_by_command": counted.by_command(),
        "s3_requests_per_upload_in_moto_log": counted.logged_per_upload,
        "counted_uploads": counted.uploads,
    }
    result.checks.append(Check(f"{label} Depot api/tus throughput", lead, PEER_TARGET_LEAD, "x"))
    commands = ", ".join(f"{name} {count:g}" for name, count in counted.by_command().items())
    logged = counted.logged_per_upload
    in_log = f"; moto's access log: {logged:.1f}" if logged is not None else ""
    result.notes.append(
        f"{label}: tus made {counted.per_upload:.1f} S3 requests per upload ({commands}), counted by its S3 "
        f"client (tus_server.mjs){in_log}, over {counted.uploads} uploads sent one at a time, each object then "
        f"read back and compared; Depot api/tus = {lead:.2f}x."
    )


def _report_size(result: Result, size: int, merged: dict[str, Phase], steps: Plan) -> None:
    label = _size_label(size)
    baseline = merged[BASELINE]
    view = table(
        f"Upload throughput, {label} payloads, concurrency {steps.load.concurrency}",
        [
            "variant",
            "ops",
            "ops/s",
            "MB/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "cpu ms/op: server",
            "s3",
            "client",
            "cores: busy",
            "other",
        ],
    )
    figures: dict[str, Any] = {}
    for variant, phase in merged.items():
        ratio = phase.ops_per_s / baseline.ops_per_s
        figures[variant] = phase.summary() | {"ratio_to_baseline": round(ratio, 3)}
        view.add_row(
            variant,
            str(phase.ops),
            f"{phase.ops_per_s:.1f}",
            f"{phase.mb_per_s:.1f}",
            f"{ratio:.2f}",
            f"{percentile(phase.latencies_s, 50) * 1000:.1f}",
            f"{percentile(phase.latencies_s, 99) * 1000:.1f}",
            f"{phase.cpu_ms_per_op(PEER if variant == PEER else 'api'):.2f}",
            f"{phase.cpu_ms_per_op('s3'):.2f}",
            f"{phase.cpu_ms_per_op('client'):.2f}",
            f"{phase.busy_cores:.2f}",
            f"{phase.other_cores:.2f}",
        )
    result.figures[label] = figures
    result.tables.append(view)
    result.checks.append(
        Check(f"{label} api/s3 throughput", merged["api"].ops_per_s / baseline.ops_per_s, TARGET_RATIO, "x")
    )
