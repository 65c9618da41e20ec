"""Memory of the upload API while one large file (1 GiB) streams through it.

A fresh API process (``DEPOT_MAX_UPLOAD_BYTES`` = 2 GiB) is measured idle right after
start, idle again after two warm-up uploads (one under, one over the S3 part size, so
every code path is loaded), then during one large ``POST /v1/documents`` whose multipart
body is generated chunk by chunk (neither side ever holds the file). Its peak RSS is the
kernel's ``VmHWM``; ``VmRSS`` is also sampled every 20 ms during the upload.

The same bytes are then written to S3 by this process the way the API writes them (an
aiobotocore multipart upload, parts of the API's part size, one after the other): the
baseline for the API's MB/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from benchmarks.payload import GIB, KIB, MIB, MultipartEnvelope, Payloads, stream_bytes, stream_multipart
from benchmarks.procfs import CpuSnapshot, memory_kib
from benchmarks.report import Check, Result, table
from benchmarks.stack import Api, Stack

NAME = "memory"
TARGET_PEAK_MIB = 150.0
SAMPLE_INTERVAL_S = 0.02


def _mib(kib: int) -> float:
    return kib / 1024


class RssSampler:
    """Samples a process's ``VmRSS`` in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples_kib: list[int] = []

    async def _run(self) -> None:
        while True:
            self.samples_kib.append(memory_kib(self.pid)["VmRSS"])
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _upload(http: httpx.AsyncClient, api: Api, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.post(f"{api.url}/v1/documents", content=body, headers=api.headers() | headers)
    if response.status_code != 201:
        raise RuntimeError(f"upload API answered {response.status_code}: {response.text[:300]}")
    document: dict[str, Any] = response.json()
    return document


async def _s3_multipart(s3: Any, bucket: str, size: int, part_size: int) -> None:
    """What the API's blob store does, without the API: buffer a part, upload it, repeat."""
    key = f"bench/memory-baseline/{os.urandom(8).hex()}"
    upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
    parts: list[dict[str, Any]] = []
    buffer = bytearray()

    async def flush() -> None:
        response = await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=bytes(buffer)
        )
        parts.append({"PartNumber": len(parts) + 1, "ETag": response["ETag"]})
        buffer.clear()

    async for chunk in stream_bytes(size):
        buffer += chunk
        if len(buffer) >= part_size:
            await flush()
    if buffer:
        await flush()
    await s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})


async def run(stack: Stack, *, quick: bool) -> Result:
    size = 256 * MIB if quick else GIB
    part_size = stack.settings().part_size
    result = Result(NAME)
    async with (
        stack.api(max_upload_bytes=str(2 * GIB)) as api,
        stack.s3() as s3,
        httpx.AsyncClient(timeout=600) as http,
    ):
        await asyncio.sleep(1.0)
        idle_start = memory_kib(api.pid)
        for warm_size in (64 * KIB, 2 * part_size + 1):
            data = Payloads(warm_size).data(0)
            envelope = MultipartEnvelope()
            await _upload(http, api, envelope.body(data), envelope.headers(len(data)))
        await asyncio.sleep(0.5)
        idle_warm = memory_kib(api.pid)

        pids = {"api": api.pid, "s3": stack.s3_pid, "client": os.getpid()}
        envelope = MultipartEnvelope(filename="large.bin")
        before = CpuSnapshot.take(pids)
        started = time.perf_counter()
        async with RssSampler(api.pid).running() as sampler:
            document = await _upload(http, api, stream_multipart(envelope, size), envelope.headers(size))
        api_elapsed = time.perf_counter() - started
        api_cpu = CpuSnapshot.take(pids).since(before)
        after = memory_kib(api.pid)
        if document["size_bytes"] != size:
            raise RuntimeError(f"stored {document['size_bytes']} bytes, sent {size}")

        before = CpuSnapshot.take(pids)
        started = time.perf_counter()
        await _s3_multipart(s3, stack.bucket, size, part_size)
        s3_elapsed = time.perf_counter() - started
        s3_cpu = CpuSnapshot.take(pids).since(before)

    peak = _mib(after["VmHWM"])
    sampled_max = _mib(max(sampler.samples_kib))
    api_mbps, s3_mbps = size / api_elapsed / 1e6, size / s3_elapsed / 1e6
    result.figures = {
        "file_bytes": size,
        "part_size": part_size,
        "rss_mib": {
            "idle_after_start": round(_mib(idle_start["VmRSS"]), 1),
            "idle_after_warmup": round(_mib(idle_warm["VmRSS"]), 1),
            "peak_vmhwm": round(peak, 1),
            "peak_sampled_vmrss": round(sampled_max, 1),
            "after_upload": round(_mib(after["VmRSS"]), 1),
            "samples": len(sampler.samples_kib),
        },
        "upload": {
            "api_s": round(api_elapsed, 2),
            "api_mb_per_s": round(api_mbps, 1),
            "s3_multipart_s": round(s3_elapsed, 2),
            "s3_multipart_mb_per_s": round(s3_mbps, 1),
            "ratio_to_baseline": round(api_mbps / s3_mbps, 3),
            "api_cpu_cores": {name: round(used / api_elapsed, 2) for name, used in api_cpu.items()},
            "s3_multipart_cpu_cores": {name: round(used / s3_elapsed, 2) for name, used in s3_cpu.items()},
        },
    }
    label = f"{size // MIB} MiB" if size < GIB else f"{size // GIB} GiB"
    memory = table(f"Upload API memory, one {label} upload (part size {part_size // MIB} MiB)", ["RSS", "MiB"])
    memory.add_row("idle, after start", f"{_mib(idle_start['VmRSS']):.1f}")
    memory.add_row("idle, after warm-up", f"{_mib(idle_warm['VmRSS']):.1f}")
    memory.add_row("peak VmHWM (whole life)", f"{peak:.1f}")
    memory.add_row("peak sampled VmRSS during upload", f"{sampled_max:.1f}")
    memory.add_row("peak above warm idle", f"{peak - _mib(idle_warm['VmRSS']):.1f}")
    memory.add_row("after the upload", f"{_mib(after['VmRSS']):.1f}")
    speed = table(
        f"{label} upload throughput",
        ["path", "seconds", "MB/s", "ratio", "cores: api", "s3", "client", "busy", "other"],
    )
    for path, elapsed, mbps, cpu in (
        ("api", api_elapsed, api_mbps, api_cpu),
        ("s3 multipart (baseline)", s3_elapsed, s3_mbps, s3_cpu),
    ):
        speed.add_row(
            path,
            f"{elapsed:.2f}",
            f"{mbps:.1f}",
            f"{mbps / s3_mbps:.2f}",
            *(f"{cpu[name] / elapsed:.2f}" for name in ("api", "s3", "client", "machine")),
            f"{(cpu['machine'] - cpu['api'] - cpu['s3'] - cpu['client']) / elapsed:.2f}",
        )
    result.tables += [memory, speed]
    result.checks.append(Check(f"peak RSS, {label} upload", peak, TARGET_PEAK_MIB, "MiB", higher_is_better=False))
    return result
