"""Load and timing: a closed-loop driver (``concurrency`` workers repeat one operation), and
one-off timed batches of work (:func:`timed`).

In the driver, warm-up operations run first (same concurrency) and are not counted. The measured phase
stops starting operations after ``duration`` seconds or ``max_ops`` operations, whichever
comes first, and waits for those in flight; its elapsed time ends with the last one. CPU
time of the given processes (and of the whole machine) is read from ``/proc`` around it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from benchmarks.procfs import CpuSnapshot, cpu_seconds_if_alive

Operation = Callable[[int], Awaitable[None]]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Phase:
    """One measured phase of one operation."""

    ops: int
    payload_bytes: int
    elapsed_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float]

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s

    @property
    def mb_per_s(self) -> float:
        return self.ops * self.payload_bytes / self.elapsed_s / 1e6

    def cpu_ms_per_op(self, name: str) -> float:
        return self.cpu_s[name] / self.ops * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "elapsed_s": round(self.elapsed_s, 3),
            "ops_per_s": round(self.ops_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": round(percentile(self.latencies_s, 50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies_s, 99) * 1000, 2),
            "cpu_ms_per_op": {name: round(self.cpu_ms_per_op(name), 3) for name in self.cpu_s},
            "machine_busy_cores": round(self.busy_cores, 2),
            "other_cores": round(self.other_cores, 2),
        }

    @property
    def busy_cores(self) -> float:
        """Cores the whole machine kept busy, on average."""
        return self.cpu_s["machine"] / self.elapsed_s

    @property
    def other_cores(self) -> float:
        """Cores busy outside the watched processes (PostgreSQL, the broker, anything else)."""
        watched = sum(used for name, used in self.cpu_s.items() if name != "machine")
        return (self.cpu_s["machine"] - watched) / self.elapsed_s


@dataclass(frozen=True)
class Load:
    concurrency: int
    duration_s: float
    max_ops: int
    warmup_ops: int


# Operation numbers are unique in the process, so payloads built from them never repeat.
_numbers = itertools.count()


async def _workers(operation: Operation, concurrency: int, keep_going: Callable[[], bool]) -> list[float]:
    latencies: list[float] = []

    async def worker() -> None:
        while keep_going():
            number = next(_numbers)
            started = time.perf_counter()
            await operation(number)
            latencies.append(time.perf_counter() - started)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies


async def warm_up(operation: Operation, concurrency: int, count: int) -> None:
    """Run ``operation`` ``count`` times, ``concurrency`` at a time, measuring nothing."""
    started = itertools.count()
    await _workers(operation, concurrency, lambda: next(started) < count)


async def measure(operation: Operation, load: Load, *, payload_bytes: int, pids: Mapping[str, int]) -> Phase:
    """Warm up, then run ``operation`` under ``load``; ``operation(n)`` gets a fresh ``n`` each call."""
    await warm_up(operation, load.concurrency, load.warmup_ops)
    counted = itertools.count()
    before = CpuSnapshot.take(pids)
    started = time.perf_counter()
    deadline = started + load.duration_s
    latencies = await _workers(
        operation,
        load.concurrency,
        lambda: time.perf_counter() < deadline and next(counted) < load.max_ops,
    )
    elapsed = time.perf_counter() - started
    used = CpuSnapshot.take(pids).since(before)
    return Phase(ops=len(latencies), payload_bytes=payload_bytes, elapsed_s=elapsed, latencies_s=latencies, cpu_s=used)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    """Count, p50/p90/p99/max and mean of ``latencies_s``, in milliseconds."""
    if not latencies_s:
        return {"count": 0}
    return {
        "count": len(latencies_s),
        "p50_ms": round(percentile(latencies_s, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies_s, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies_s, 99) * 1000, 2),
        "max_ms": round(max(latencies_s) * 1000, 2),
        "mean_ms": round(sum(latencies_s) / len(latencies_s) * 1000, 2),
    }


@dataclass(frozen=True)
class Batch:
    """A fixed amount of work (``events``) done once: how long it took and the CPU it used."""

    events: int
    elapsed_s: float
    cpu_s: dict[str, float]

    @property
    def per_s(self) -> float:
        return self.events / self.elapsed_s

    def cpu_ms_per_event(self, name: str) -> float:
        return self.cpu_s[name] / self.events * 1000

    @property
    def busy_cores(self) -> float:
        return self.cpu_s["machine"] / self.elapsed_s

    @property
    def other_cores(self) -> float:
        watched = sum(used for name, used in self.cpu_s.items() if name != "machine")
        return (self.cpu_s["machine"] - watched) / self.elapsed_s

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.per_s, 1),
            "cpu_ms_per_event": {
                name: round(self.cpu_ms_per_event(name), 4) for name in self.cpu_s if name != "machine"
            },
            "machine_busy_cores": round(self.busy_cores, 2),
            "other_cores": round(self.other_cores, 2),
        }


async def timed(
    work: Awaitable[None], *, events: int, pids: Mapping[str, int], database_url: str | None = None
) -> Batch:
    """Run ``work`` (which does ``events`` events) once; time it and read the CPU it cost.

    With ``database_url``, the CPU of that database's PostgreSQL backends is read too
    (``postgres``: every session on it, this process's included).
    """
    backends_before = await backend_cpu(database_url) if database_url else {}
    before = CpuSnapshot.take(pids)
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    used = CpuSnapshot.take(pids).since(before)
    if database_url:
        backends = await backend_cpu(database_url)
        used["postgres"] = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends.items())
    return Batch(events=events, elapsed_s=elapsed, cpu_s=used)


async def backend_cpu(database_url: str) -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL backend connected to ``database_url``'s database.

    Readable when PostgreSQL runs on this machine as a user whose ``/proc`` entries we may
    read; empty otherwise.
    """
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    try:
        return cpu_seconds_if_alive([row["pid"] for row in rows])
    except PermissionError:
        return {}
