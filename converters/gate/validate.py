"""Fidelity gate: how much did conversion lose, measured against the fp32 reference.

The fp32 ONNX export (itself checked against PyTorch eager) is the reference; it runs once
per conversion (:class:`Reference`) and every recipe's artifact is graded against it,
through the device's own backend. Metrics per task:

| task  | inputs | metrics (gated) | direction |
|-------|--------|-----------------|-----------|
| image | seeded latents and labels | ``psnr_db`` (peak = the output range); ``max_abs_error`` reported | higher |
| audio | seeded melodies | ``snr_db``, ``log_mel_distance`` (mean abs diff of log10 mel power) | higher / lower |
| speech | real sentences, seeded noise | ``log_mel_distance``, ``duration_error``; ``duration_ratio`` reported | lower / lower |
| text  | real text and questions (:mod:`converters.gate.text_gate`) | ``ppl_ratio``, ``greedy_agreement``, ``answers_kept`` | lower / higher / higher |

Each task's thresholds, metrics and inputs are its GateSpec's (specs.py; the figures behind
them are in docs/converting.md); a conversion may override a bound (``--threshold psnr_db=18``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edge_aigc.errors import ConversionError

from . import text_gate
from .calibration import VALIDATION_SEED
from .specs import get_gate, sample_feeds
from ..sources.types import Source

__all__ = ["HIGHER_IS_BETTER", "FidelityReport", "Reference", "evaluate", "IDENTICAL_DB"]

# JSON has no infinity: bit-identical outputs (PSNR/SNR = inf) are recorded as this many dB.
IDENTICAL_DB = 999.0

HIGHER_IS_BETTER = {"psnr_db", "snr_db", "top1_agreement", "greedy_agreement", "answers_kept",
                    "median_divergence", "answers_right"}


@dataclass
class FidelityReport:
    task: str
    recipe: str
    metrics: dict[str, float]
    thresholds: dict[str, float]
    samples: int
    failures: list[str] = field(default_factory=list)
    degraded_allowed: bool = False
    inputs: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        clean = {k: round(v, 6) if math.isfinite(v) else (IDENTICAL_DB if v > 0 else -IDENTICAL_DB)
                 for k, v in self.metrics.items()}
        return {"reference": "fp32 ONNX export", "inputs": self.inputs, "samples": self.samples, "metrics": clean,
                "thresholds": self.thresholds, "passed": self.passed,
                "degraded": bool(self.failures) and self.degraded_allowed, "failures": self.failures}

    def summary(self) -> str:
        parts = []
        for k, v in self.metrics.items():
            limit = self.thresholds.get(k)
            sign = "≥" if k in HIGHER_IS_BETTER else "≤"
            parts.append(f"{k} {v:.4g}" + (f" ({sign} {limit:g})" if limit is not None else ""))
        return ", ".join(parts)


class Reference:
    """The fp32 ONNX export's outputs on the gate's inputs: run once per conversion, on first
    use, and shared by every recipe graded against it."""

    def __init__(self, source: Source, path: Path, samples: int = 8):
        self.source, self.path, self.samples = source, path, samples
        self._text: dict[int, tuple[text_gate.GateInputs, text_gate.LmRun]] = {}

    @cached_property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        """Seeded inputs for generators (a different seed from int8-static's calibration)."""
        return sample_feeds(self.source, self.path, self.samples, VALIDATION_SEED)

    @cached_property
    def outputs(self) -> list[dict[str, np.ndarray]]:
        from edge_aigc.backends import open_session

        session = open_session("onnx", self.path, None, self.source.name)
        return [session.run(feed) for feed in self.feeds]

    def text(self, context: int) -> tuple[text_gate.GateInputs, text_gate.LmRun]:
        """The text gate's inputs for artifacts of this ``context``, and fp32's run on them."""
        if context not in self._text:
            cfg = self.source.task_config
            lm = text_gate.loop(self.source, self.path, "onnx", cfg)
            inputs = text_gate.gate_inputs(self.source, min(context, text_gate.context(lm, cfg)))
            self._text[context] = inputs, text_gate.run_lm(self.source, lm, inputs)
        return self._text[context]


def evaluate(reference: Reference, recipe: str, candidate: Path, overrides: dict[str, float] | None = None,
             allow_degraded: bool = False, fmt: str = "onnx",
             task_config: dict[str, Any] | None = None) -> FidelityReport:
    """Measure ``candidate`` (an ``fmt`` artifact, described by ``task_config``, by default
    the source's) against the fp32 ``reference``; failures are listed, not raised."""
    task = reference.source.task
    gate = get_gate(task)
    thresholds, known = gate.bounds(recipe, fmt), gate.metrics
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConversionError(f"threshold {key!r} does not apply to {task} "
                                  f"(known: {', '.join(sorted(known))})")
        thresholds[key] = float(value)
    measured, samples, inputs = gate.measure(reference, candidate, fmt, task_config or reference.source.task_config)
    failures = []
    for key, limit in thresholds.items():
        value = measured[key]
        ok = value >= limit if key in HIGHER_IS_BETTER else value <= limit
        if not ok or math.isnan(value):
            sign = "≥" if key in HIGHER_IS_BETTER else "≤"
            failures.append(f"{key} = {value:.4g}, needs {sign} {limit:g}")
    return FidelityReport(task, recipe, measured, thresholds, samples, failures, allow_degraded,
                          inputs)
