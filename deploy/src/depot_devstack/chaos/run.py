"""One soak, start to verdict: start, shake, recover, reconcile, drain, count."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from depot_common.auth import mint_token
from depot_devstack.chaos.faults import FaultLog, Profile, inject, schedule
from depot_devstack.chaos.fleet import Fleet, unhandled_errors
from depot_devstack.chaos.invariants import Verdict, check, unsettled
from depot_devstack.chaos.workload import Canary, Client, Ledger, run_client

log = structlog.get_logger("chaos.run")

MIB = 1024 * 1024
WEIGHTS = {
    "streamed": 40,
    "batch": 10,
    "duplicate": 8,
    "delete": 10,
    "presigned": 12,
    "presigned-multipart": 2,
    "streamed-large": 1,
}


@dataclass
class Settings:
    """The knobs of a run; the Depot settings are short so a run can finish in seconds."""

    profile: Profile
    seed: int
    clients: int
    state_dir: Path
    upload_ttl: int
    settle_s: float = 60.0
    grace: int = 2
    part_size: int = 5 * MIB

    def depot_env(self) -> dict[str, str]:
        return {
            "DEPOT_UPLOAD_TTL": str(self.upload_ttl),
            "DEPOT_RECONCILE_GRACE": str(self.grace),
            "DEPOT_RECONCILE_INDEX_LAG": "5",
            "DEPOT_RECONCILE_OUTBOX_ALLOWANCE": "60",
            "DEPOT_RECONCILE_INTERVAL": "0",
            "DEPOT_PART_SIZE": str(self.part_size),
            "DEPOT_CONSUMER_SESSION_TIMEOUT": "6",
            "DEPOT_RELAY_POLL_INTERVAL": "1",
        }


@dataclass
class Report:
    seed: int
    verdict: Verdict
    faults: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    operations: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    gave_up: dict[str, int] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    startup_exits: dict[str, int] = field(default_factory=dict)
    reconcile: dict[str, Any] = field(default_factory=dict)
    searchable: dict[str, Any] = field(default_factory=dict)


def rng_of(parent: random.Random) -> random.Random:
    """A child generator drawn from ``parent``: same seed, same clients."""
    return random.Random(parent.random())  # noqa: S311 - a reproducible workload, not a secret


def _reconcile(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    """``depot-reconciler run --json [args]``: its exit code and its JSON (findings left out)."""
    result = subprocess.run(  # noqa: S603 - our argv
        [sys.executable, "-m", "depot_reconciler", "run", "--json", *args],
        env={**os.environ, **env, "DEPOT_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        body: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        body = {"stdout": result.stdout[-2000:], "stderr": result.stderr[-2000:]}
    body.pop("findings", None)
    return result.returncode, body


async def _settle(env: dict[str, str], limit_s: float) -> float:
    """Wait until the pipeline owes nothing (outboxes published, index caught up)."""
    started = time.monotonic()
    while (left := await unsettled(env)) and time.monotonic() - started < limit_s:
        log.info("chaos.settling", owed=left)
        await asyncio.sleep(1)
    return time.monotonic() - started


async def soak(settings: Settings) -> Report:
    rng = random.Random(settings.seed)  # noqa: S311 - a reproducible schedule, not a secret
    fleet = Fleet(settings.state_dir)
    timings: dict[str, float] = {}
    stop = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        started = time.monotonic()
        await asyncio.to_thread(fleet.start_servers, settings.depot_env())
        fleet.start_services()
        supervisor = asyncio.create_task(fleet.supervise(stop))
        await fleet.wait_ready(120)
        timings["start_s"] = time.monotonic() - started
        env = fleet.env
        token = mint_token(env["DEPOT_JWT_SECRET"], "chaos-owner", ttl=3600)
        ledger = Ledger()
        faults = schedule(settings.profile, [item.spec.name for item in fleet.services], rng)
        record = FaultLog()
        began = time.monotonic()
        until = began + settings.profile.workload_s
        clients = [
            Client(f"client-{n}", fleet.api_urls(), token, ledger, rng_of(rng), 5.0, settings.part_size)
            for n in range(settings.clients)
        ]
        op_deadline = max(60.0, settings.profile.kafka_pause_s * 3)
        canary = Canary(fleet.api_urls(), fleet.search_url(), token)
        canary_task = asyncio.create_task(canary.run(until))
        await asyncio.gather(
            inject(fleet, faults, began, record),
            *(run_client(client, until, op_deadline, WEIGHTS) for client in clients),
        )
        workload_end = time.monotonic()
        timings["workload_s"] = workload_end - began
        timings["recover_ready_s"] = await fleet.wait_ready(180)
        # a pending upload abandoned in the last second becomes stale TTL + grace later
        await asyncio.sleep(max(0.0, workload_end + settings.upload_ttl + settings.grace + 1 - time.monotonic()))
        timings["drain_before_reconcile_s"] = await _settle(env, settings.settle_s)
        code, applied = await asyncio.to_thread(_reconcile, env, "--apply", "--force")
        log.info("chaos.reconcile.applied", code=code, counts=applied.get("counts"))
        timings["drain_after_reconcile_s"] = await _settle(env, 120)
        await canary_task
        await asyncio.sleep(settings.grace + 1)
        after_code, after = await asyncio.to_thread(_reconcile, env)
        verdict = await check(env, ledger, fleet.search_url(), token)
        for item in fleet.services:
            for crash in item.crashes:
                verdict.add("crashes", crash)
        for error in unhandled_errors({item.spec.name: item.log_path for item in fleet.services}):
            verdict.add("http5xx", error)
        verdict.findings_after = int(after.get("total", -1)) if after_code in (0, 1) else -1
        if after_code != 0:  # the counts, or what it printed when it printed no JSON
            verdict.evidence["findings_after"] = [json.dumps(after.get("counts") or after)[:4000]]
        return Report(
            seed=settings.seed,
            verdict=verdict,
            faults=record.done,
            timings={key: round(value, 1) for key, value in timings.items()},
            operations=dict(ledger.operations),
            statuses=dict(sorted(ledger.statuses.items())),
            gave_up=dict(ledger.gave_up),
            kills={item.spec.name: item.kills for item in fleet.services if item.kills},
            startup_exits={item.spec.name: item.startup_exits for item in fleet.services if item.startup_exits},
            reconcile={"apply_exit": code, "applied": applied, "second_exit": after_code, "second": after},
            searchable=searchable_figures(canary, record, began),
        )
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor
        await asyncio.to_thread(fleet.stop)


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50_s": pick(0.5), "p99_s": pick(0.99), "max_s": round(ordered[-1], 2)}


def searchable_figures(canary: Canary, record: FaultLog, began: float) -> dict[str, Any]:
    """Acknowledged → searchable: overall, and for the uploads acked during each outage or 15 s after it."""
    figures: dict[str, Any] = {"all": _quantiles([took for _, took in canary.samples]), "missed": canary.missed}
    for start, end, kind in record.outages:
        window = [took for acked, took in canary.samples if start <= acked <= end + 15]
        figures[f"{kind}@{start - began:.0f}s"] = _quantiles(window)
    return figures


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
