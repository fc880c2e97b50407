"""Suggest the device profile that fits the machine we are running on.

Facts come from the places a device really has them: ``platform.machine()``, the
CPU feature flags in /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm), MemTotal
in /proc/meminfo, the board name in /proc/device-tree/model, and the execution
providers this onnxruntime build offers.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProfileError
from .profiles import Profile, list_profiles

__all__ = ["MachineFacts", "Candidate", "read_machine", "rank_profiles", "detect_profile",
           "profile_name_or_detect"]

# MemTotal is below the RAM printed on the box (firmware, GPU carve-outs): a 4 GB Pi 5
# reports about 4,000 MB, a 512 MB Zero 2 W about 430 MB.
MEMORY_SLACK = 0.8


@dataclass(frozen=True)
class MachineFacts:
    arch: str
    cpu: str
    cores: int
    memory_mb: int
    isa: frozenset[str]
    providers: tuple[str, ...]
    board: str = ""


@dataclass(frozen=True)
class Candidate:
    profile: Profile
    fits: bool
    score: float
    reasons: tuple[str, ...]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _onnx_providers() -> tuple[str, ...]:
    try:
        import onnxruntime
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def read_machine(proc: str = "/proc", device_tree_model: str = "/proc/device-tree/model",
                 providers: tuple[str, ...] | None = None) -> MachineFacts:
    cpuinfo = _read(f"{proc}/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags") or fields.get("features") or ""
    mem_kb = 0
    for line in _read(f"{proc}/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return MachineFacts(
        arch=platform.machine(),
        cpu=fields.get("model name") or fields.get("cpu part", "unknown"),
        cores=os.cpu_count() or 1,
        memory_mb=mem_kb // 1024,
        isa=frozenset(flags.split()),
        providers=_onnx_providers() if providers is None else providers,
        board=_read(device_tree_model).strip("\x00 \n"),
    )


def _judge(p: Profile, m: MachineFacts) -> Candidate:
    reasons: list[str] = []
    fits = True
    board_match = bool(p.device_model) and p.device_model.lower() in m.board.lower()
    if p.arch != m.arch:
        return Candidate(p, False, 0.0, (f"arch {p.arch} but this machine is {m.arch}",))
    missing = [f for f in p.isa if f not in m.isa]
    if missing:
        fits = False
        reasons.append(f"CPU lacks {', '.join(missing)}")
    if m.memory_mb < p.memory_mb * MEMORY_SLACK:
        fits = False
        reasons.append(f"needs ~{p.memory_mb} MB, machine has {m.memory_mb} MB")
    accelerators = [x for x in (p.onnx.providers if p.onnx else ()) if x != "CPUExecutionProvider"]
    absent = [x for x in accelerators if x not in m.providers]
    if absent and not board_match:
        fits = False
        reasons.append(f"onnxruntime here lacks {', '.join(absent)}")
    elif absent:
        reasons.append(f"board matches but onnxruntime lacks {', '.join(absent)} (falls back to CPU)")
    threads = max(p.onnx.threads if p.onnx else 0, p.tflite.threads if p.tflite else 0)
    if threads > m.cores:
        reasons.append(f"profile runs {threads} threads, machine has {m.cores} cores")
    if board_match:
        reasons.append(f"board is {m.board!r}")
    elif p.device_model:
        reasons.append(f"board not identified as {p.device_model}")
    # Prefer, among fitting profiles: the identified board, then the most specific ISA,
    # then the largest memory the machine still satisfies, then accelerators in use.
    score = (1000 if board_match else 0) + 10 * len(p.isa) + p.memory_mb / 1024 \
        + 5 * (len(accelerators) - len(absent)) - (2 if threads > m.cores else 0)
    if fits and not reasons:
        reasons.append("arch, CPU features and memory all match")
    return Candidate(p, fits, score if fits else 0.0, tuple(reasons))


def rank_profiles(machine: MachineFacts, profiles: list[Profile] | None = None) -> list[Candidate]:
    """Every profile judged against the machine, best fit first."""
    judged = [_judge(p, machine) for p in (profiles if profiles is not None else list_profiles())]
    return sorted(judged, key=lambda c: (c.fits, c.score), reverse=True)


def profile_name_or_detect(name: str | None) -> str:
    """``name`` when given, else the best fitting profile's name (ProfileError when none fits)."""
    if name:
        return name
    found = detect_profile()
    if found is None:
        raise ProfileError("no profile fits this machine; pass --profile NAME")
    return found.profile.name


def detect_profile(machine: MachineFacts | None = None,
                   profiles: list[Profile] | None = None) -> Candidate | None:
    """The best fitting profile, or None when no profile fits this machine."""
    ranked = rank_profiles(machine or read_machine(), profiles)
    return ranked[0] if ranked and ranked[0].fits else None
