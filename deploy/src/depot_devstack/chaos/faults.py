"""The seeded fault schedule: SIGKILLs, S3 and broker pauses, a PostgreSQL crash.

The same seed gives the same schedule (which faults, when, which process); the effects
still depend on timing, which is the point of a soak.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import structlog

from depot_devstack.chaos.fleet import Fleet

log = structlog.get_logger("chaos.faults")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the workload starts
    kind: str  # kill | pause-s3 | pause-kafka | crash-postgres
    duration: float = 0.0
    target: str = ""


@dataclass(frozen=True)
class Profile:
    """How hard a run shakes the system."""

    workload_s: float
    kill_every_s: float
    s3_pause_s: float
    kafka_pause_s: float
    postgres_down_s: float
    cycles: int  # how many times the outage trio repeats


SHORT = Profile(workload_s=30, kill_every_s=5, s3_pause_s=8, kafka_pause_s=8, postgres_down_s=3, cycles=1)
FULL = Profile(workload_s=420, kill_every_s=8, s3_pause_s=20, kafka_pause_s=25, postgres_down_s=3, cycles=3)


def schedule(profile: Profile, services: list[str], rng: random.Random) -> list[Fault]:
    """Outages spread over the workload, never two at once; kills at random times in between."""
    faults: list[Fault] = []
    span = profile.workload_s / profile.cycles
    for cycle in range(profile.cycles):
        start = cycle * span
        slots = [
            ("pause-s3", profile.s3_pause_s),
            ("pause-kafka", profile.kafka_pause_s),
            ("crash-postgres", profile.postgres_down_s),
        ]
        rng.shuffle(slots)
        gap = (span - sum(duration for _, duration in slots)) / (len(slots) + 1)
        at = start + gap * rng.uniform(0.6, 1.0)
        for kind, duration in slots:
            faults.append(Fault(at=at, kind=kind, duration=duration))
            at += duration + gap
    at = rng.expovariate(1 / profile.kill_every_s)
    while at < profile.workload_s:
        faults.append(Fault(at=at, kind="kill", target=rng.choice(services)))
        at += rng.expovariate(1 / profile.kill_every_s)
    return sorted(faults, key=lambda fault: fault.at)


@dataclass
class FaultLog:
    """What was done when: lines for people, and (start, end, kind) of every outage."""

    done: list[str] = field(default_factory=list)
    outages: list[tuple[float, float, str]] = field(default_factory=list)

    def note(self, started: float, text: str) -> None:
        self.done.append(f"{time.monotonic() - started:6.1f}s {text}")


async def inject(fleet: Fleet, faults: list[Fault], started: float, record: FaultLog) -> None:
    """Carry out the schedule; every outage is over when this returns."""
    by_name = {item.spec.name: item for item in fleet.services}
    for fault in faults:
        await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
        if fault.kind == "kill":
            fleet.kill(by_name[fault.target])
            record.note(started, f"SIGKILL {fault.target}")
            continue
        began = time.monotonic()
        if fault.kind == "crash-postgres":
            await asyncio.to_thread(fleet.crash_postgres)
            record.note(started, "PostgreSQL crashed (pg_ctl stop -m immediate)")
            await asyncio.sleep(fault.duration)
            await asyncio.to_thread(fleet.restart_postgres)
            record.note(started, "PostgreSQL restarted")
            record.outages.append((began, time.monotonic(), fault.kind))
            continue
        name = "s3" if fault.kind == "pause-s3" else "kafka"
        fleet.pause(name)
        record.note(started, f"{name} paused for {fault.duration:.0f} s")
        try:
            await asyncio.sleep(fault.duration)
        finally:
            fleet.resume(name)
        record.note(started, f"{name} resumed")
        record.outages.append((began, time.monotonic(), fault.kind))
    log.info("chaos.faults.done", count=len(faults))
