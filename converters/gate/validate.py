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

Default thresholds are in ``THRESHOLDS`` (documented in docs/converting.md) and can be
overridden per conversion (``--threshold psnr_db=18``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edge_aigc.contract import Task
from edge_aigc.errors import ConversionError

from . import metrics, text_gate
from .calibration import VALIDATION_SEED, sample_feeds
from ..sources.types import Source

__all__ = ["THRESHOLDS", "FORMAT_THRESHOLDS", "HIGHER_IS_BETTER", "FidelityReport", "Reference", "evaluate",
           "IDENTICAL_DB"]

# JSON has no infinity: bit-identical outputs (PSNR/SNR = inf) are recorded as this many dB.
IDENTICAL_DB = 999.0

_IMAGE = {"fp32": {"psnr_db": 60.0}, "fp16": {"psnr_db": 40.0}, "int8-dynamic": {"psnr_db": 25.0},
          "int8-static": {"psnr_db": 22.0}, "int4": {"psnr_db": 22.0}}
_AUDIO = {"fp32": {"snr_db": 60.0, "log_mel_distance": 0.01},
          # fp16 activations carry noise ~66 dB below peak: inaudible (SNR bounds that), but
          # visible to log-mel in spectral valleys down to the metric's 80 dB floor.
          "fp16": {"snr_db": 30.0, "log_mel_distance": 0.5},
          "int8-dynamic": {"snr_db": 12.0, "log_mel_distance": 0.25},
          "int8-static": {"snr_db": 12.0, "log_mel_distance": 0.25},
          "int4": {"snr_db": 12.0, "log_mel_distance": 0.25}}
# Text: measured on SmolLM2-135M-Instruct and the tiny test LMs (docs/converting.md has the
# figures). answers_kept 1.0: no question fp32 answers right may be lost.
_TEXT = {"fp32": {"ppl_ratio": 1.001, "greedy_agreement": 0.95, "answers_kept": 1.0},
         "fp16": {"ppl_ratio": 1.01, "greedy_agreement": 0.75, "answers_kept": 1.0},
         "int8-dynamic": {"ppl_ratio": 1.01, "greedy_agreement": 0.5, "answers_kept": 1.0},
         "int8-static": {"ppl_ratio": 1.05, "greedy_agreement": 0.2, "answers_kept": 0.9},
         "int4": {"ppl_ratio": 1.04, "greedy_agreement": 0.2, "answers_kept": 0.9}}
# Speech: the same sentences and noise through fp32 and the candidate; measured on
# en_US-joe-medium (docs/converting.md). duration_error is the largest |1 - length ratio|.
# log_mel_distance is taken along the best time alignment (durations may move a frame);
# two fp32 renditions of a sentence with different noise seeds are 0.205 apart, so a
# recipe may differ from fp32 by at most half that.
_SPEECH = {"fp32": {"log_mel_distance": 0.01, "duration_error": 0.001},
           "fp16": {"log_mel_distance": 0.05, "duration_error": 0.02},
           "int8-dynamic": {"log_mel_distance": 0.1, "duration_error": 0.05},
           "int8-static": {"log_mel_distance": 0.1, "duration_error": 0.05},
           "int4": {"log_mel_distance": 0.1, "duration_error": 0.05}}
THRESHOLDS: dict[str, dict[str, dict[str, float]]] = {
    Task.IMAGE: _IMAGE, Task.AUDIO: _AUDIO, Task.TEXT: _TEXT, Task.SPEECH: _SPEECH}
HIGHER_IS_BETTER = {"psnr_db", "snr_db", "top1_agreement", "greedy_agreement", "answers_kept",
                    "median_divergence", "answers_right"}
# LiteRT's CUMSUM adds in another order than PyTorch and ONNX Runtime: a source-filter
# vocoder's running phase (thousands of cycles) then differs by an ulp or two, which moves
# the waveform's SNR against the ONNX reference to ~53 dB (the zoo tone model, 1 s) while
# its spectrum is unchanged (log-mel distance 0.0002). The spectral bound stays as it is.
FORMAT_THRESHOLDS = {("tflite", Task.AUDIO, "fp32"): {"snr_db": 40.0}}


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


# Measured and recorded with no default threshold; ``--threshold`` may set one.
REPORTED = {Task.IMAGE: {"max_abs_error"}, Task.AUDIO: set(), Task.SPEECH: {"duration_ratio"},
            Task.TEXT: {"median_divergence", "top1_agreement", "mean_kl", "perplexity", "answers_right"}}


def _loop(source: Source, path: Path, fmt: str, task_config: dict[str, Any]):
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text.task import make_kv_loop

    return make_kv_loop(open_session(fmt, path, None, source.name), task_config)


def _context(loop, task_config: dict[str, Any]) -> int:
    return min(int(task_config["max_context"]), loop.cache_length)


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
            loop = _loop(self.source, self.path, "onnx", cfg)
            inputs = text_gate.gate_inputs(self.source, min(context, _context(loop, cfg)))
            self._text[context] = inputs, text_gate.run_lm(self.source, loop, inputs)
        return self._text[context]


def _measure_generator(reference: Reference, out: list[dict[str, np.ndarray]]) -> dict[str, float]:
    source, cfg = reference.source, reference.source.task_config
    # Compare the reference's first output by name: a TFLite signature lists outputs sorted.
    name = next(iter(reference.outputs[0]))
    ref_arrays, out_arrays = [r[name] for r in reference.outputs], [o[name] for o in out]
    r, o = np.concatenate([x.ravel() for x in ref_arrays]), np.concatenate([x.ravel() for x in out_arrays])
    if source.task == Task.IMAGE:
        lo, hi = cfg.get("output_range", [float(r.min()), float(r.max())])
        return {"psnr_db": metrics.psnr_db(r, o, peak=max(hi - lo, 1e-6)),
                "max_abs_error": float(np.max(np.abs(r - o)))}
    rate = int(cfg.get("sample_rate", 16000))
    if source.task == Task.SPEECH:  # durations may differ: compare spectra over the common length
        ratios = [o.size / max(r.size, 1) for r, o in zip(ref_arrays, out_arrays)]
        mels = [metrics.aligned_log_mel_distance(a, b, rate) for a, b in zip(ref_arrays, out_arrays)]
        return {"log_mel_distance": float(np.mean(mels)), "duration_error": float(max(abs(1 - x) for x in ratios)),
                "duration_ratio": float(np.mean(ratios))}
    return {"snr_db": metrics.snr_db(r, o),
            "log_mel_distance": float(np.mean([metrics.log_mel_distance(a, b, rate)
                                               for a, b in zip(ref_arrays, out_arrays)]))}


def _measure(reference: Reference, candidate: Path, fmt: str,
             task_config: dict[str, Any]) -> tuple[dict[str, float], int, str]:
    """The metrics for ``candidate``, how many inputs they were measured on, and what those were."""
    source = reference.source
    if source.task == Task.TEXT:
        loop = _loop(source, candidate, fmt, task_config)
        inputs, ref = reference.text(_context(loop, task_config))
        return (text_gate.compare(ref, text_gate.run_lm(source, loop, inputs), inputs.budget), len(inputs.prompts),
                inputs.describe())
    from edge_aigc.backends import open_session

    session = open_session(fmt, candidate, None, source.name)
    what = "real sentences, seeded noise" if source.task == Task.SPEECH else "seeded inputs"
    return (_measure_generator(reference, [session.run(feed) for feed in reference.feeds]), reference.samples,
            f"{reference.samples} {what}")


def evaluate(reference: Reference, recipe: str, candidate: Path, overrides: dict[str, float] | None = None,
             allow_degraded: bool = False, fmt: str = "onnx",
             task_config: dict[str, Any] | None = None) -> FidelityReport:
    """Measure ``candidate`` (an ``fmt`` artifact, described by ``task_config``, by default
    the source's) against the fp32 ``reference``; failures are listed, not raised."""
    task = reference.source.task
    thresholds = {**THRESHOLDS[task].get(recipe, {}), **FORMAT_THRESHOLDS.get((fmt, task, recipe), {})}
    known = {m for r in THRESHOLDS[task].values() for m in r} | REPORTED[task]
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConversionError(f"threshold {key!r} does not apply to {task} "
                                  f"(known: {', '.join(sorted(known))})")
        thresholds[key] = float(value)
    measured, samples, inputs = _measure(reference, candidate, fmt, task_config or reference.source.task_config)
    failures = []
    for key, limit in thresholds.items():
        value = measured[key]
        ok = value >= limit if key in HIGHER_IS_BETTER else value <= limit
        if not ok or math.isnan(value):
            sign = "≥" if key in HIGHER_IS_BETTER else "≤"
            failures.append(f"{key} = {value:.4g}, needs {sign} {limit:g}")
    return FidelityReport(task, recipe, measured, thresholds, samples, failures, allow_degraded,
                          inputs)
