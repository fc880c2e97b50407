"""Profile threads against fitted threads: the same bundle, the same greedy decode, two thread counts.

The runtime caps a profile's ``threads`` at the CPUs the process may use
(``edge_aigc.device.system.fit_threads``). This measures what that cap is worth here: ONNX Runtime
sessions made directly with the profile's count (what the runtime did before the cap) and
with the fitted count, run interleaved, medians of several runs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_aigc import load_bundle
from edge_aigc.backends.onnxruntime import OnnxSession
from edge_aigc.device.profiles import get_profile
from edge_aigc.device.system import fit_threads, usable_cpus
from edge_aigc.tasks.text.task import make_kv_loop

from .common import Report, median

__all__ = ["bench_threads"]


class _FixedThreads:
    """An ONNX Runtime session with exactly ``n`` intra-op threads, shaped like OnnxSession."""

    backend = "onnxruntime"

    def __init__(self, path: Path, n: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = n, 1
        self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def native(self) -> Any:
        return self._sess

    @property
    def inputs(self):
        return OnnxSession._info(self._sess.get_inputs())

    @property
    def outputs(self):
        return OnnxSession._info(self._sess.get_outputs())


def _decode(loop, prompt: list[int], steps: int) -> float:
    """Seconds per generated token of a greedy decode after the prompt."""
    state = loop.start(1)
    logits = loop.step(state, np.array([prompt]), last_only=True)[0, -1]
    start = time.perf_counter()
    for _ in range(steps):
        logits = loop.step(state, np.array([[int(np.argmax(logits))]]))[0, -1]
    return (time.perf_counter() - start) / steps


def bench_threads(bundle: Path, profile: str, steps: int, repeats: int, progress=print) -> tuple[Report, dict]:
    asked = get_profile(profile).onnx.threads
    fitted = fit_threads(asked).threads
    budget = usable_cpus()
    with load_bundle(bundle) as b:
        cfg = b.manifest.config
        path = b.file(cfg.model or "model.onnx")
        loops = {n: make_kv_loop(_FixedThreads(path, n), cfg) for n in sorted({asked, fitted})}
        prompt = list(range(1, 17))
        for loop in loops.values():
            _decode(loop, prompt, 8)  # warm up
        runs: dict[int, list[float]] = {n: [] for n in loops}
        for i in range(repeats):
            for n in (loops if i % 2 == 0 else reversed(list(loops))):
                runs[n].append(_decode(loops[n], prompt, steps))
            progress(f"threads: repeat {i + 1}/{repeats}")
    tps = {n: 1 / median(v) for n, v in runs.items()}
    report = Report(f"Threads: {profile}'s {asked} against the fitted {fitted} — {b.manifest.name} "
                    f"({b.manifest.recipe}), greedy decode", ["threads", "why", "tokens/s (median)", "vs fitted"])
    for n in loops:
        why = "the profile's value" if n == asked else f"fitted: {budget.count} {budget.why}"
        report.add(n, why, int(round(tps[n])), round(tps[n] / tps[fitted], 2))
    report.notes.append(f"{repeats} interleaved runs of {steps} tokens after a 16-token prompt; "
                        "ONNX Runtime sessions made directly with each count")
    return report, {"asked": asked, "fitted": fitted, "tokens_per_s": {str(n): v for n, v in tps.items()},
                    "usable_cpus": budget.count, "why": budget.why}
