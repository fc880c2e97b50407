"""What this process may use of the machine: CPUs (affinity, cgroup quota), RSS, SoC temperature.

A profile's ``threads`` describes the board it was written for; the process may be
pinned to fewer CPUs (``taskset``, a container, systemd ``CPUAffinity=``) or capped by a
cgroup v2 ``cpu.max`` quota (``CPUQuota=``, ``docker --cpus``). More intra-op threads
than usable CPUs makes ONNX Runtime's spinning workers fight each other: measured on a
2-core VM with a 135M-parameter int8 LM, 26 tokens/s with the profile's 4 threads
against 70 with 2. So the profile's value is an upper bound, fitted here.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuBudget", "ThreadPlan", "usable_cpus", "fit_threads", "rss_mb", "cpu_temperature_c", "advertises_amx"]


def _cgroup_quota_cpus(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """CPUs allowed by the tightest cgroup v2 ``cpu.max`` on this process's path, if any."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None
    tightest = None
    path = cgroup_root / rel.lstrip("/")
    while True:
        try:
            quota, period = (path / "cpu.max").read_text().split()[:2]
            if quota != "max":
                cpus = int(quota) / int(period)
                tightest = cpus if tightest is None else min(tightest, cpus)
        except (OSError, ValueError):
            pass
        if path == cgroup_root or cgroup_root not in path.parents:
            break
        path = path.parent
    return tightest


@dataclass(frozen=True)
class CpuBudget:
    count: int
    why: str


def usable_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
                proc_self_cgroup: str | os.PathLike = "/proc/self/cgroup") -> CpuBudget:
    """How many CPUs this process may run on at once, and what decided it."""
    try:
        count, why = len(os.sched_getaffinity(0)), "CPU(s) in its affinity mask"
    except (AttributeError, OSError):
        count, why = os.cpu_count() or 1, "CPU(s) on this machine"
    quota = _cgroup_quota_cpus(Path(cgroup_root), Path(proc_self_cgroup))
    # Rounded down, as Go's automaxprocs does: a thread beyond the quota only gets throttled.
    if quota is not None and max(1, math.floor(quota)) < count:
        count, why = max(1, math.floor(quota)), f"by its cgroup's cpu.max quota of {quota:g} CPUs"
    return CpuBudget(count, why)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    reason: str


def fit_threads(profile_threads: int | None, requested: int | None = None,
                budget: CpuBudget | None = None) -> ThreadPlan:
    """Intra-op threads to start: the request or the profile's value, never above the usable CPUs."""
    budget = budget or usable_cpus()
    wanted, source = (requested, "--threads") if requested else (profile_threads, "the profile")
    if not wanted:
        return ThreadPlan(budget.count, f"one per usable CPU: {budget.count} {budget.why}")
    if wanted > budget.count:
        return ThreadPlan(budget.count, f"{source} asks for {wanted}, but this process may use "
                                        f"{budget.count}: {budget.count} {budget.why}")
    return ThreadPlan(wanted, f"from {source}; {budget.count} {budget.why}")


def advertises_amx(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True where the CPU lists Intel AMX (``amx_tile``). llama.cpp picks its AMX kernels when it
    repacks weights, and on the VMs this project measured on (Xeon with AMX, the tile state not
    granted to the guest) they die (SIGSEGV in llama-bench, SIGILL through llama-cpp-python), so
    repacking is turned off there, which leaves its AVX2/AVX-512 kernels."""
    try:
        return "amx_tile" in Path(cpuinfo).read_text()
    except OSError:
        return False


def rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_temperature_c() -> float | None:
    """The first thermal zone (the SoC on a Pi or Jetson), where /sys/class/thermal has one."""
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000, 1)
    except (OSError, ValueError):
        return None
