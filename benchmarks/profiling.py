"""``python -m benchmarks.profiling [--service indexer]``: where a service's CPU goes under load.

Runs the upload API (or ``depot-indexer consume``) in its own process (as in the benchmarks)
with an on-demand cProfile on the CPU time of its Python thread (``benchmarks._profiled_api``),
warms it up, profiles only while it drives it — the ``api`` operation of the upload benchmark,
or a batch of ``document.stored`` events of the indexer benchmark — and prints the packages and
functions with the most own time. cProfile slows Python code down (C code much less), so read
the shares, not the absolute times. cProfile cannot see the threads that run no Python
(obstore's tokio workers): the first table is the CPU of each of the service's threads, read
from ``/proc`` around the same window (profiled, so the Python thread's figure is inflated).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import re
import signal
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import asyncpg
from rich.console import Console

from benchmarks import indexer, upload
from benchmarks.events import Message, move_group_to_end, outbox_headers, produce
from benchmarks.load import Load, measure, warm_up
from benchmarks.payload import KIB, Payloads
from benchmarks.procfs import thread_cpu_seconds
from benchmarks.report import table
from benchmarks.stack import Stack, running_stack
from depot_common.events import DOCUMENTS_TOPIC
from depot_common.kafka import ensure_topics, make_producer
from depot_common.s3 import object_store

_PACKAGE = re.compile(r"(?:site-packages|src)/([A-Za-z0-9_]+)")
_STDLIB = re.compile(r"/lib/python3\.\d+/([A-Za-z0-9_]+)")


def package_of(filename: str, function: str) -> str:
    """The package a profiled function belongs to (C functions by their type or module)."""
    if filename == "~":
        owner = re.search(r"of '([A-Za-z0-9_.]+)", function) or re.search(
            r"<built-in method ([A-Za-z0-9_.]+)", function
        )
        return f"C: {owner.group(1).split('.')[0] if owner else function}"
    if match := _PACKAGE.search(filename):
        return match.group(1)
    if match := _STDLIB.search(filename):
        return f"stdlib: {match.group(1)}"
    return filename


#: CPU seconds of each of the profiled process's threads in the profiled window, by thread name
ThreadCpu = dict[str, float]


async def _drive(
    stack: Stack, profile_path: Path, *, size: int, seconds: float, concurrency: int
) -> tuple[int, ThreadCpu]:
    async with (
        stack.api(python_args=["-m", "benchmarks._profiled_api", str(profile_path)]) as api,
        stack.s3() as s3,
        upload.http_client(concurrency) as http,
    ):
        objects = object_store(stack.settings())
        operation = upload.operations(api, s3, objects, http, stack.bucket, Payloads(size))["api"]
        load = Load(concurrency=concurrency, duration_s=seconds, max_ops=10**9, warmup_ops=4 * concurrency)
        await warm_up(operation, concurrency, load.warmup_ops)
        before = thread_cpu_seconds(api.pid)
        os.kill(api.pid, signal.SIGUSR1)
        phase = await measure(operation, replace(load, warmup_ops=0), payload_bytes=size, pids={})
        os.kill(api.pid, signal.SIGUSR2)
        threads = _since(before, thread_cpu_seconds(api.pid))
        await _wait_dumped(profile_path)
    return phase.ops, threads


def _since(before: ThreadCpu, after: ThreadCpu) -> ThreadCpu:
    return {name: used - before.get(name, 0.0) for name, used in after.items()}


async def _wait_dumped(profile_path: Path) -> None:
    for _ in range(100):
        if await asyncio.to_thread(profile_path.exists):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the dump finishes


async def _drive_indexer(stack: Stack, profile_path: Path, *, events: int) -> tuple[int, ThreadCpu]:
    """Profile ``depot-indexer consume`` while it indexes ``events`` documents (as in the indexer benchmark)."""
    bootstrap = [stack.kafka_bootstrap]
    group = f"profile-indexer-{os.getpid()}"
    await ensure_topics(bootstrap, {DOCUMENTS_TOPIC: indexer.PARTITIONS})
    await move_group_to_end(bootstrap, DOCUMENTS_TOPIC, group)
    warmup = 50
    docs = indexer.documents(warmup + events)
    messages = [Message.of(event, outbox_headers()) for event, _ in docs]
    async with stack.database() as database_url, stack.s3() as s3:
        await indexer.put_objects(s3, stack.bucket, [(event.data.object_key, content) for event, content in docs])
        conn = await asyncpg.connect(database_url)
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            async with stack.service(
                "indexer",
                indexer.INDEXER,
                python_args=["-m", "benchmarks._profiled_api", str(profile_path)],
                database_url=database_url,
                consumer_group=group,
                consumer_session_timeout="2",
            ) as service:
                await produce(producer, DOCUMENTS_TOPIC, messages[:warmup], 500)
                await indexer.wait_indexed(conn, warmup, service, patience=120)
                before = thread_cpu_seconds(service.pid)
                os.kill(service.pid, signal.SIGUSR1)
                await produce(producer, DOCUMENTS_TOPIC, messages[warmup:], 500)
                await indexer.wait_indexed(conn, len(messages), service, patience=600)
                os.kill(service.pid, signal.SIGUSR2)
                threads = _since(before, thread_cpu_seconds(service.pid))
                await _wait_dumped(profile_path)
        finally:
            await producer.stop()
            await conn.close()
    return events, threads


def show(console: Console, profile_path: Path, ops: int, threads: ThreadCpu, top: int, unit: str = "upload") -> None:
    by_thread = table(f"CPU by thread, per {unit} ({ops} {unit}s)", ["thread", f"ms/{unit}"])
    for name, used in sorted(threads.items(), key=lambda item: -item[1]):
        if used > 0:
            by_thread.add_row(name, f"{used / ops * 1000:.3f}")
    console.print(by_thread)
    stats = pstats.Stats(str(profile_path))
    raw = stats.stats  # type: ignore[attr-defined]
    by_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        by_package[package_of(filename, function)] += own
        total += own
    packages = table(f"Own time by package, per {unit} ({ops} {unit}s)", ["package", "share", f"ms/{unit}"])
    for name, own in sorted(by_package.items(), key=lambda item: -item[1])[:top]:
        packages.add_row(name, f"{own / total:.1%}", f"{own / ops * 1000:.3f}")
    console.print(packages)
    functions = table("Functions by own time", ["function", f"calls/{unit}", "share", f"cumulative ms/{unit}"])
    ranked = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in ranked:
        where = f"{package_of(filename, function)}:{Path(filename).name}:{line} {function}"
        functions.add_row(where[:110], f"{calls / ops:.1f}", f"{own / total:.1%}", f"{cumulative / ops * 1000:.3f}")
    console.print(functions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64 * KIB, help="payload bytes (default 64 KiB)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=upload.CONCURRENCY)
    parser.add_argument("--service", choices=["upload-api", "indexer"], default="upload-api")
    parser.add_argument("--events", type=int, default=2000, help="indexer: documents indexed while profiled")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--output", type=Path, help="keep the .prof file here")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console.width = 160
    with contextlib.ExitStack() as resources:
        directory = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="depot-profile-")))
        profile_path = args.output or directory / f"{args.service}.prof"
        stack = resources.enter_context(running_stack())
        if args.service == "indexer":
            ops, threads = asyncio.run(_drive_indexer(stack, profile_path, events=args.events))
        else:
            ops, threads = asyncio.run(
                _drive(stack, profile_path, size=args.size, seconds=args.seconds, concurrency=args.concurrency)
            )
        show(console, profile_path, ops, threads, args.top, "event" if args.service == "indexer" else "upload")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
