"""One entry per task on the host side: a :class:`GateSpec` says how a conversion of that task
is graded against its fp32 reference (the device side's mirror is edge_aigc/tasks/spec.py).

A spec holds the task's thresholds per recipe (bounds, measured on the reference models:
docs/converting.md has the figures), the metrics it only reports, how to measure a candidate,
and the seeded inputs the gate and int8-static calibration feed it. validate.py, calibration and
debug-quant read it from here; adding a task is writing its spec and calling :func:`register_gate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from edge_aigc.contract import Format, Recipe, Task, bundle_tasks
from edge_aigc.errors import ConversionError

from . import metrics, text_gate
from .calibration import generator_feeds, speech_feeds, text_feeds
from ..sources.types import Source

__all__ = ["GateSpec", "register_gate", "unregister_gate", "get_gate", "sample_feeds", "measure_outputs"]

Feeds = Callable[[Source, Path, int, np.random.Generator], Iterator[dict]]
# fp32's outputs, the candidate's (one array per feed, by the first output's name), the task_config
Compare = Callable[[list[np.ndarray], list[np.ndarray], dict[str, Any]], dict[str, float]]
# (reference, candidate path, format, task_config) -> (metrics, samples, what the inputs were)
Measure = Callable[[Any, Path, str, dict[str, Any]], tuple[dict[str, float], int, str]]


def measure_outputs(reference: Any, candidate: Path, fmt: str,
                    task_config: dict[str, Any]) -> tuple[dict[str, float], int, str]:
    """A generator's measure: the candidate run on the reference's feeds, its first output
    compared by the task's ``compare`` (a TFLite signature lists outputs sorted: by name)."""
    from edge_aigc.backends import open_session

    gate = get_gate(reference.source.task)
    session = open_session(fmt, candidate, None, reference.source.name)
    out = [session.run(feed) for feed in reference.feeds]
    name = next(iter(reference.outputs[0]))
    measured = gate.compare([r[name] for r in reference.outputs], [o[name] for o in out],
                            reference.source.task_config)
    return measured, reference.samples, f"{reference.samples} {gate.inputs}"


@dataclass(frozen=True)
class GateSpec:
    task: str
    thresholds: Mapping[str, Mapping[str, float]]   # recipe -> metric -> bound
    feeds: Feeds                                     # seeded inputs (the gate's, and calibration's)
    compare: Compare | None = None                   # a generator's: fp32's outputs against the candidate's
    measure: Measure = measure_outputs               # how a candidate is measured (text: its own gate)
    reported: frozenset[str] = frozenset()           # measured and recorded with no default bound
    inputs: str = "seeded inputs"                    # what the feeds are, in the report
    # bounds that differ in one format: (format, recipe) -> metric -> bound
    format_thresholds: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)

    def bounds(self, recipe: str, fmt: str) -> dict[str, float]:
        return {**self.thresholds.get(recipe, {}), **self.format_thresholds.get((fmt, recipe), {})}

    @property
    def metrics(self) -> set[str]:
        """Every metric a bound may be set on (``--threshold``)."""
        return {m for r in self.thresholds.values() for m in r} | set(self.reported)


_GATES: dict[str, GateSpec] = {}


def register_gate(spec: GateSpec) -> GateSpec:
    if spec.task not in bundle_tasks():
        raise ValueError(f"gate for {spec.task!r}: register its TaskSpec first (edge_aigc/tasks/spec.py)")
    _GATES[spec.task] = spec
    return spec


def unregister_gate(task: str) -> None:
    _GATES.pop(task, None)


def get_gate(task: str) -> GateSpec:
    try:
        return _GATES[task]
    except KeyError:
        raise ConversionError(f"no fidelity gate for task {task!r} (converters/gate/specs.py)") from None


def sample_feeds(source: Source, model_path: Path, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` seeded feed dicts for the fp32 model at ``model_path`` (the task's own sampler)."""
    return list(get_gate(source.task).feeds(source, model_path, n, np.random.default_rng(seed)))


# -- the kit's own tasks ----------------------------------------------------------------------
def _compare_image(ref: list[np.ndarray], out: list[np.ndarray], cfg: dict[str, Any]) -> dict[str, float]:
    r, o = np.concatenate([x.ravel() for x in ref]), np.concatenate([x.ravel() for x in out])
    lo, hi = cfg.get("output_range", [float(r.min()), float(r.max())])
    return {"psnr_db": metrics.psnr_db(r, o, peak=max(hi - lo, 1e-6)), "max_abs_error": float(np.max(np.abs(r - o)))}


def _compare_audio(ref: list[np.ndarray], out: list[np.ndarray], cfg: dict[str, Any]) -> dict[str, float]:
    r, o = np.concatenate([x.ravel() for x in ref]), np.concatenate([x.ravel() for x in out])
    rate = int(cfg.get("sample_rate", 16000))
    return {"snr_db": metrics.snr_db(r, o),
            "log_mel_distance": float(np.mean([metrics.log_mel_distance(a, b, rate) for a, b in zip(ref, out)]))}


def _compare_speech(ref: list[np.ndarray], out: list[np.ndarray], cfg: dict[str, Any]) -> dict[str, float]:
    """Durations may differ: spectra are compared along the best time alignment."""
    rate = int(cfg.get("sample_rate", 16000))
    ratios = [o.size / max(r.size, 1) for r, o in zip(ref, out)]
    mels = [metrics.aligned_log_mel_distance(a, b, rate) for a, b in zip(ref, out)]
    return {"log_mel_distance": float(np.mean(mels)), "duration_error": float(max(abs(1 - x) for x in ratios)),
            "duration_ratio": float(np.mean(ratios))}


def _note_feeds(source: Source, path: Path, n: int, rng: np.random.Generator) -> Iterator[dict]:
    return generator_feeds(source, path, n, rng, notes=True)


register_gate(GateSpec(
    Task.TEXT,
    # measured on SmolLM2-135M-Instruct and the tiny test LMs. answers_kept is a count of ~30 and
    # moves by one or two between CPUs and kernels: llama.cpp's own Q8_0 keeps 27 of the 29
    # answers its float32 gets right on an AMD VM and 23 on an Intel one, its Q4_1 (the published
    # file) 26 and 27, and its Q8_0 agrees with float32's 32 greedy tokens on 0.42 of the questions
    # (benchmarks/analysis.md, bench --only gate-noise); the bounds sit just below those, and
    # perplexity and KL tell precision apart (docs/converting.md, "The LM gate's bounds")
    {Recipe.FP32: {"ppl_ratio": 1.001, "greedy_agreement": 0.95, "answers_kept": 1.0},
     Recipe.FP16: {"ppl_ratio": 1.01, "greedy_agreement": 0.75, "answers_kept": 0.96},
     Recipe.INT8_DYNAMIC: {"ppl_ratio": 1.01, "greedy_agreement": 0.4, "answers_kept": 0.9},
     Recipe.INT8_STATIC: {"ppl_ratio": 1.05, "greedy_agreement": 0.2, "answers_kept": 0.85},
     Recipe.INT4: {"ppl_ratio": 1.04, "greedy_agreement": 0.2, "answers_kept": 0.85}},
    text_feeds, measure=text_gate.measure,
    reported=frozenset({"median_divergence", "top1_agreement", "mean_kl", "perplexity", "answers_right"})))

register_gate(GateSpec(
    Task.IMAGE,
    {Recipe.FP32: {"psnr_db": 60.0}, Recipe.FP16: {"psnr_db": 40.0}, Recipe.INT8_DYNAMIC: {"psnr_db": 25.0},
     Recipe.INT8_STATIC: {"psnr_db": 22.0}, Recipe.INT4: {"psnr_db": 22.0}},
    generator_feeds, _compare_image, reported=frozenset({"max_abs_error"})))

register_gate(GateSpec(
    Task.AUDIO,
    # fp16 activations carry noise ~66 dB below peak: inaudible (SNR bounds that), but visible
    # to log-mel in spectral valleys down to the metric's 80 dB floor
    {Recipe.FP32: {"snr_db": 60.0, "log_mel_distance": 0.01}, Recipe.FP16: {"snr_db": 30.0, "log_mel_distance": 0.5},
     Recipe.INT8_DYNAMIC: {"snr_db": 12.0, "log_mel_distance": 0.25},
     Recipe.INT8_STATIC: {"snr_db": 12.0, "log_mel_distance": 0.25},
     Recipe.INT4: {"snr_db": 12.0, "log_mel_distance": 0.25}},
    _note_feeds, _compare_audio,
    # LiteRT's CUMSUM adds in another order than PyTorch and ONNX Runtime: a source-filter
    # vocoder's running phase (thousands of cycles) then differs by an ulp or two, which moves
    # the waveform's SNR against the ONNX reference to ~53 dB (the zoo tone model, 1 s) while
    # its spectrum is unchanged (log-mel distance 0.0002). The spectral bound stays as it is.
    format_thresholds={(Format.TFLITE, Recipe.FP32): {"snr_db": 40.0}}))

register_gate(GateSpec(
    Task.SPEECH,
    # the same sentences and noise through fp32 and the candidate, measured on en_US-joe-medium;
    # duration_error is the largest |1 - length ratio|; two fp32 renditions of a sentence with
    # different noise seeds are 0.205 apart in log-mel distance, so a recipe may differ by half that
    {Recipe.FP32: {"log_mel_distance": 0.01, "duration_error": 0.001},
     Recipe.FP16: {"log_mel_distance": 0.05, "duration_error": 0.02},
     Recipe.INT8_DYNAMIC: {"log_mel_distance": 0.1, "duration_error": 0.05},
     Recipe.INT8_STATIC: {"log_mel_distance": 0.1, "duration_error": 0.05},
     Recipe.INT4: {"log_mel_distance": 0.1, "duration_error": 0.05}},
    speech_feeds, _compare_speech, reported=frozenset({"duration_ratio"}), inputs="real sentences, seeded noise"))
