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

The HTTP client of the ``api`` and ``presigned`` rows is aiohttp (one session, a pool of
``CONCURRENCY`` connections), not httpx: the client shares the machine's cores with the
servers it measures, and httpx cost ~3 ms of CPU per 64 KiB request here against ~1 ms for
aiohttp, CPU the API and moto then lacked (on 2 cores the client's cost lowers the ``api``
row's ceiling, not the ``s3`` row's, whose client is the S3 library itself). Both rows use
the same client, so they stay comparable with each other.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks.load import Load, Phase, measure, percentile
from benchmarks.payload import KIB, MIB, MultipartEnvelope, Payloads
from benchmarks.report import Check, Result, table
from benchmarks.stack import Api, Stack

NAME = "upload"
TARGET_RATIO = 0.85
BASELINE = "s3"
VARIANTS = ("api", BASELINE, "s3-as-api", "presigned")
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
    async with (
        stack.api() as api,
        stack.s3() as s3,
        http_client(steps.load.concurrency) as http,
    ):
        pids = {"api": api.pid, "s3": stack.s3_pid, "client": os.getpid()}
        for size in SIZES:
            phases: dict[str, list[Phase]] = {variant: [] for variant in VARIANTS}
            for _ in range(steps.rounds):
                for variant in VARIANTS:
                    await _empty_bucket(s3, stack.bucket)
                    payloads = Payloads(size)
                    operation = operations(api, s3, http, stack.bucket, payloads)[variant]
                    phases[variant].append(await measure(operation, steps.load, payload_bytes=size, pids=pids))
            await _empty_bucket(s3, stack.bucket)
            _report_size(result, size, {variant: _merge(runs) for variant, runs in phases.items()}, steps)
    result.notes.append(
        "ratio = ops/s over the s3 baseline (aiobotocore PutObject, the API's own client). CPU from /proc: ms per "
        "operation of the API, moto and this process; busy = cores the machine kept busy, other = busy minus "
        "those three (PostgreSQL, the broker, anything else running). The outbox relay is not running."
    )
    return result


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
            "cpu ms/op: api",
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
            f"{phase.cpu_ms_per_op('api'):.2f}",
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
