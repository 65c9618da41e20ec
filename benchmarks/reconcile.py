"""Reconciler scan: objects scanned per second and peak RSS of ``depot-reconciler run --json``.

For each size (a small and a ten times larger one), in a fresh database and a fresh bucket:
the upload and search schemas are migrated, ``size`` consistent ``stored`` documents are
COPYed into ``upload.documents`` with their ``indexed`` rows in ``search.index_entries``,
and ``size`` small objects are written under ``documents/<id>`` (aiobotocore, many PUTs in
flight; the fill is timed apart and is not part of the figures). A handful of
inconsistencies are planted: ``PLANTED`` orphan objects (no document; the run gets
``DEPOT_RECONCILE_GRACE=0`` so they count at once) and ``PLANTED`` stored documents (indexed)
without an object. A ``depot-reconciler run --json`` process (the operator's command, all
checks, dry run) then scans it; the run must find exactly those and have scanned every
object and document, or the benchmark fails.

Peak RSS is the process's ``VmHWM`` (monotonic), read from ``/proc`` every 20 ms until it
exits. ``wait4``'s ``ru_maxrss`` is kept in the JSON but not used: the kernel carries the
forking parent's high-water mark (this benchmark process, which grows with the fill) into
the child's at ``exec``, so it measures the benchmark, not the reconciler.
An empty database and bucket give the baseline (imports, clients, pool). The scan merges
keyset pages, so memory should not grow with the bucket: target, large/small within ±20 %.

Sizes: the brief asks for 10,000 and 100,000 objects (quick: 2,000 and 20,000), but moto
stores about 300 PUTs/s on a small machine (its one GIL-bound process is saturated), so
110,000 objects alone would take 6 minutes to write: the sizes below (5,000/50,000, quick
800/8,000) keep the tenfold ratio within the time budget (``SIZES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from benchmarks.procfs import memory_kib
from benchmarks.report import Check, Result, table
from benchmarks.stack import Stack
from depot_common.db import create_pool, migrate
from depot_common.s3 import ensure_bucket, s3_client
from depot_indexer.bootstrap import MIGRATIONS as SEARCH_MIGRATIONS
from depot_indexer.repository import SCHEMA as SEARCH_SCHEMA
from depot_reconciler.checks import CHECKS, content_mismatch, missing_blob, orphan_object
from depot_upload.bootstrap import MIGRATIONS as UPLOAD_MIGRATIONS
from depot_upload.documents.repository import SCHEMA as UPLOAD_SCHEMA

NAME = "reconcile"
#: (small, large) objects per run; the brief's 10,000/100,000 (quick 2,000/20,000) do not fit.
SIZES = {False: (5_000, 50_000), True: (800, 8_000)}
REQUESTED_SIZES = {False: (10_000, 100_000), True: (2_000, 20_000)}
PLANTED = 5
PUT_CONCURRENCY = 32
DELETE_BATCH = 1000
RSS_RATIO_RANGE = (0.8, 1.2)
SAMPLE_INTERVAL_S = 0.02
RUN_TIMEOUT_S = 300.0
OWNER = "bench-reconcile"


@dataclass
class Fill:
    """What one size's database and bucket hold, and how long writing them took."""

    size: int
    orphan_keys: set[str] = field(default_factory=set)
    missing_ids: set[str] = field(default_factory=set)
    db_s: float = 0.0
    s3_s: float = 0.0

    @property
    def objects(self) -> int:
        return self.size + len(self.orphan_keys)

    @property
    def documents(self) -> int:
        return self.size + len(self.missing_ids)


@dataclass
class Run:
    """One ``depot-reconciler run --json``: its output, exit, timing and memory."""

    size: int
    exit_code: int
    wall_s: float
    scan_s: float | None
    peak_kib: int
    ru_maxrss_kib: int
    output: dict[str, Any]
    objects: int = 0
    documents: int = 0
    fill: Fill | None = None

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @property
    def timed_s(self) -> float:
        return self.scan_s if self.scan_s else self.wall_s


def _body(key: str) -> bytes:
    return f"depot reconcile benchmark object {key}\n".encode()


def _document_row(doc_id: uuid.UUID) -> tuple[Any, ...]:
    key = f"documents/{doc_id}"
    body = _body(key)
    return (
        doc_id,
        OWNER,
        f"note-{doc_id.hex[:8]}.txt",
        "text/plain",
        key,
        len(body),
        hashlib.sha256(body).hexdigest(),
        "stored",
        1,
    )


def _entry_row(doc: tuple[Any, ...]) -> tuple[Any, ...]:
    doc_id, owner, filename, content_type, _key, size, sha256, _status, version = doc
    return (doc_id, owner, filename, content_type, size, sha256, version, "indexed")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep ``migrate``'s info lines off the benchmark's console."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(**previous)


async def _fill_database(database_url: str, consistent: list[uuid.UUID], missing: list[uuid.UUID]) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        with _quiet_logs():
            await migrate(pool, UPLOAD_SCHEMA, UPLOAD_MIGRATIONS)
            await migrate(pool, SEARCH_SCHEMA, SEARCH_MIGRATIONS)
        documents = [_document_row(doc_id) for doc_id in consistent + missing]
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "documents",
                schema_name=UPLOAD_SCHEMA,
                columns=[
                    "id",
                    "owner_id",
                    "filename",
                    "content_type",
                    "object_key",
                    "size_bytes",
                    "sha256",
                    "status",
                    "version",
                ],
                records=documents,
            )
            await conn.copy_records_to_table(
                "index_entries",
                schema_name=SEARCH_SCHEMA,
                columns=[
                    "document_id",
                    "owner_id",
                    "filename",
                    "content_type",
                    "size_bytes",
                    "sha256",
                    "version",
                    "status",
                ],
                records=[_entry_row(doc) for doc in documents],
            )
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE upload.documents; ANALYZE search.index_entries")
    finally:
        await pool.close()


async def _put_all(s3: Any, bucket: str, keys: list[str]) -> None:
    """PUT every key, ``PUT_CONCURRENCY`` requests in flight."""
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            await s3.put_object(Bucket=bucket, Key=key, Body=_body(key), ContentType="text/plain")

    await asyncio.gather(*(worker() for _ in range(PUT_CONCURRENCY)))


async def _empty_bucket(s3: Any, bucket: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": DELETE_BATCH}):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    await s3.delete_bucket(Bucket=bucket)


@contextlib.asynccontextmanager
async def _bucket(stack: Stack, name: str) -> AsyncIterator[Any]:
    """A fresh bucket (and a client for it), emptied and deleted after the block."""
    async with s3_client(stack.settings()) as s3:
        await ensure_bucket(s3, name)
        try:
            yield s3
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(_empty_bucket(s3, name))


async def _fill(database_url: str, s3: Any, bucket: str, size: int) -> Fill:
    consistent = [uuid.uuid4() for _ in range(size)]
    missing = [uuid.uuid4() for _ in range(PLANTED if size else 0)]
    orphans = [f"documents/{uuid.uuid4()}" for _ in range(PLANTED if size else 0)]
    fill = Fill(size, orphan_keys=set(orphans), missing_ids={str(doc_id) for doc_id in missing})
    started = time.perf_counter()
    await _fill_database(database_url, consistent, missing)
    fill.db_s = time.perf_counter() - started
    started = time.perf_counter()
    await _put_all(s3, bucket, [f"documents/{doc_id}" for doc_id in consistent] + orphans)
    fill.s3_s = time.perf_counter() - started
    return fill


def _reconciler_argv() -> list[str]:
    script = Path(sys.executable).parent / "depot-reconciler"
    if script.exists():
        return [str(script), "run", "--json"]
    return [sys.executable, "-m", "depot_reconciler", "run", "--json"]


def _scan_seconds(stderr: str) -> float | None:
    """``duration_s`` of the run's ``reconcile.run.planned`` log line (scan + persisting the plan)."""
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "reconcile.run.planned":
                return float(record["duration_s"])
    return None


def _spawn(env: dict[str, str], out: IO[bytes], err: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - argv is ours
        _reconciler_argv(), env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
    )


def _stop(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)


async def _reconcile(stack: Stack, database_url: str, bucket: str, size: int) -> Run:
    """Run ``depot-reconciler run --json`` to its end; its peak RSS from ``wait4``."""
    env = stack.env(database_url) | {
        "DEPOT_S3_BUCKET": bucket,
        "DEPOT_RECONCILE_GRACE": "0",
        "DEPOT_LOG_LEVEL": "info",  # for reconcile.run.planned's duration_s, on stderr
    }
    out_path, err_path = stack.log_dir / f"reconcile-{size}.json", stack.log_dir / f"reconcile-{size}.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        popen = _spawn(env, out, err)
        waited = asyncio.ensure_future(asyncio.to_thread(os.wait4, popen.pid, 0))
        hwm = 0
        try:
            while not waited.done():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, KeyError):
                    hwm = max(hwm, memory_kib(popen.pid)["VmHWM"])
                await asyncio.wait([waited], timeout=SAMPLE_INTERVAL_S)
                if time.perf_counter() - started > RUN_TIMEOUT_S:
                    raise RuntimeError(f"depot-reconciler still running after {RUN_TIMEOUT_S:.0f} s; see {err_path}")
            _, status, usage = waited.result()
            wall = time.perf_counter() - started
            popen.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if not waited.done():
                _stop(popen)
                try:
                    await asyncio.wait_for(asyncio.shield(waited), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    await waited
                popen.returncode = -1
    stderr = err_path.read_text(errors="replace")
    try:
        output = json.loads(out_path.read_text())
    except ValueError as error:
        raise RuntimeError(f"depot-reconciler exited {popen.returncode} without JSON output; see {err_path}") from error
    return Run(
        size=size,
        exit_code=popen.returncode,
        wall_s=wall,
        scan_s=_scan_seconds(stderr),
        peak_kib=hwm,
        ru_maxrss_kib=int(usage.ru_maxrss),
        output=output,
    )


def _verify(run: Run, fill: Fill) -> None:
    """The run must have scanned everything and found exactly what was planted."""
    output = run.output
    scanned = output.get("scanned", {})
    # content_mismatch runs only when asked (--verify-content/--verify-sample), and this run does not ask
    expected_counts = dict.fromkeys((name for name in CHECKS if name != content_mismatch.NAME), 0) | {
        orphan_object.NAME: len(fill.orphan_keys),
        missing_blob.NAME: len(fill.missing_ids),
    }
    found = {
        check: {item["subject"] for item in output.get("findings", []) if item["check"] == check}
        for check in (orphan_object.NAME, missing_blob.NAME)
    }
    problems = []
    if run.exit_code != (1 if fill.orphan_keys or fill.missing_ids else 0):
        problems.append(f"exit code {run.exit_code}")
    if scanned.get("objects") != fill.objects or scanned.get("documents") != fill.documents:
        problems.append(f"scanned {scanned}, expected {fill.objects} objects and {fill.documents} documents")
    if output.get("counts") != expected_counts:
        problems.append(f"counts {output.get('counts')}, expected {expected_counts}")
    if len(output.get("findings", [])) != sum(expected_counts.values()):
        problems.append(f"{len(output.get('findings', []))} findings listed")
    if found[orphan_object.NAME] != fill.orphan_keys:
        problems.append(f"orphan objects {sorted(found[orphan_object.NAME])}, planted {sorted(fill.orphan_keys)}")
    if found[missing_blob.NAME] != fill.missing_ids:
        problems.append(f"missing blobs {sorted(found[missing_blob.NAME])}, planted {sorted(fill.missing_ids)}")
    if problems:
        raise RuntimeError(f"reconcile run over {fill.size} objects is wrong: " + "; ".join(problems))
    run.objects, run.documents, run.fill = fill.objects, fill.documents, fill


async def _measure(stack: Stack, size: int) -> Run:
    bucket = f"{stack.bucket}-reconcile-{size}-{uuid.uuid4().hex[:8]}"
    async with stack.database() as database_url, _bucket(stack, bucket) as s3:
        fill = await _fill(database_url, s3, bucket, size)
        run = await _reconcile(stack, database_url, bucket, size)
        _verify(run, fill)
        return run


def _report(runs: list[Run], quick: bool) -> Result:
    baseline, *sized = runs
    small, large = sized
    result = Result(NAME)
    view = table(
        "Reconciler: depot-reconciler run --json (all checks, dry run), fresh database + bucket per size",
        ["objects", "documents", "findings", "scan s", "wall s", "objects/s", "documents/s", "peak RSS MiB"],
    )
    for run in runs:
        view.add_row(
            f"{run.objects:,}" if run.size else "0 (baseline)",
            f"{run.documents:,}",
            str(run.output["total"]),
            f"{run.timed_s:.2f}",
            f"{run.wall_s:.2f}",
            f"{run.objects / run.timed_s:,.0f}" if run.size else "",
            f"{run.documents / run.timed_s:,.0f}" if run.size else "",
            f"{run.peak_mib:.1f}",
        )
    fills = table("Fill (not part of the figures)", ["objects", "db COPY s", "S3 PUT s", "PUT/s"])
    for run in sized:
        assert run.fill is not None
        fills.add_row(
            f"{run.fill.objects:,}",
            f"{run.fill.db_s:.2f}",
            f"{run.fill.s3_s:.1f}",
            f"{run.fill.objects / run.fill.s3_s:,.0f}",
        )
    result.tables += [view, fills]
    ratio = large.peak_mib / small.peak_mib
    result.figures = {
        "sizes": [run.size for run in sized],
        "requested_sizes": list(REQUESTED_SIZES[quick]),
        "planted": {"orphan_object": PLANTED, "missing_blob": PLANTED},
        "runs": {
            str(run.size): {
                "objects": run.objects,
                "documents": run.documents,
                "findings": run.output["counts"],
                "scan_s": run.scan_s,
                "wall_s": round(run.wall_s, 3),
                "objects_per_s": round(run.objects / run.timed_s, 1),
                "documents_per_s": round(run.documents / run.timed_s, 1),
                "peak_rss_mib": round(run.peak_mib, 1),
                "wait4_ru_maxrss_mib_unused": round(run.ru_maxrss_kib / 1024, 1),
                "fill": None
                if run.fill is None
                else {"db_copy_s": round(run.fill.db_s, 2), "s3_put_s": round(run.fill.s3_s, 2)},
            }
            for run in runs
        },
        "peak_rss_ratio_large_small": round(ratio, 3),
        "peak_rss_above_baseline_mib": {str(run.size): round(run.peak_mib - baseline.peak_mib, 1) for run in sized},
    }
    low, high = RSS_RATIO_RANGE
    label = f"peak RSS {large.size:,}/{small.size:,} objects"
    result.checks += [
        Check(f"{label} (≥)", ratio, low),
        Check(f"{label} (<)", ratio, high, higher_is_better=False),
    ]
    requested = "/".join(f"{size:,}" for size in REQUESTED_SIZES[quick])
    result.notes += [
        "each run found exactly the planted inconsistencies (5 orphan objects, 5 stored documents without object)"
        " and scanned every object and document; exit code 1 (findings)",
        "scan s = the run's own reconcile.run.planned duration (all checks + persisting the plan); wall s = the"
        " whole process (start-up, migration, JSON output); objects/s and documents/s are per scan second",
        "peak RSS = the process's VmHWM, read every 20 ms until it exits (not wait4's ru_maxrss: it carries"
        " this process's own high-water mark over fork+exec); the baseline run scans an empty database and bucket",
        f"sizes reduced from the requested {requested}: moto accepts ~{_put_rate(sized):,.0f} PUT/s here",
    ]
    return result


def _put_rate(runs: list[Run]) -> float:
    fills = [run.fill for run in runs if run.fill is not None]
    return sum(fill.objects for fill in fills) / sum(fill.s3_s for fill in fills)


async def run(stack: Stack, *, quick: bool) -> Result:
    runs = [await _measure(stack, size) for size in (0, *SIZES[quick])]
    return _report(runs, quick)
