"""Readings from ``/proc``: a process's memory (``VmRSS``/``VmHWM``) and CPU time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) … of ``pid``, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def rss_mib(pid: int) -> float:
    return memory_kib(pid)["VmRSS"] / 1024


def peak_rss_mib(pid: int) -> float:
    return memory_kib(pid)["VmHWM"] / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time of each of ``pid``'s threads so far, summed by thread name (numbered names such
    as ``tokio-runtime-worker-3`` count as one); the thread that runs Python is ``main``."""
    used: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        name = "main" if task.name == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")].rstrip("0123456789-")
        fields = stat[stat.rindex(")") + 2 :].split()
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return used


def cpu_seconds_if_alive(pids: list[int]) -> dict[int, float]:
    """:func:`cpu_seconds` of each of ``pids`` still running."""
    result = {}
    for pid in pids:
        try:
            result[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return result


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle (summed over cores)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    per_process: dict[str, float]
    machine: float

    @classmethod
    def take(cls, pids: Mapping[str, int]) -> CpuSnapshot:
        return cls({name: cpu_seconds(pid) for name, pid in pids.items()}, machine_busy_seconds())

    def since(self, earlier: CpuSnapshot) -> dict[str, float]:
        """CPU seconds used between ``earlier`` and this snapshot, per process and ``machine``."""
        used = {name: value - earlier.per_process[name] for name, value in self.per_process.items()}
        used["machine"] = self.machine - earlier.machine
        return used
