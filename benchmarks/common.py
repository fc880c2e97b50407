"""What every benchmark shares: repeated timing with medians, the machine, JSON and plots."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_aigc.device.system import usable_cpus

__all__ = ["Timing", "time_repeats", "interleaved", "machine", "threads", "write_json", "Report", "median"]


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def threads() -> int:
    """One thread count for every compared system (EDGE_AIGC_BENCH_THREADS, else every CPU this
    process may use: its affinity mask and cgroup quota, as the runtime fits them)."""
    return int(os.environ.get("EDGE_AIGC_BENCH_THREADS") or usable_cpus().count)


@dataclass
class Timing:
    seconds: list[float]

    @property
    def median(self) -> float:
        return median(self.seconds)


def time_repeats(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return Timing(out)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each function once per round, round after round, so that the machine's noise
    falls on every system alike; a Timing of ``repeats`` runs each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return {name: Timing(seconds) for name, seconds in out.items()}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("onnxruntime", "onnxruntime-genai", "torch", "transformers", "ai-edge-litert"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "threads": threads(),
            "arch": platform.machine(), "python": platform.python_version(), **versions}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=float))


@dataclass
class Report:
    """Rows of one comparison: printed as a table, kept for JSON and the README."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            return f"{v:.3g}" if isinstance(v, float) else str(v)

        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}
