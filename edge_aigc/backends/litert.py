"""LiteRT backend: ``.tflite`` models through ai-edge-litert's interpreter (tflite-runtime as fallback).

LiteRT models have fixed shapes, so a converted model carries one signature per shape it
was exported at (``batch_1`` and ``batch_8``; ``batch_1_frames_800``; ``prefill_16`` and
``decode`` for language models) with its weights stored once. ``run`` picks the smallest
signature whose inputs hold the feeds, pads them with zeros up to it and trims the outputs
back: an output axis shrinks in proportion when a padded input has that same axis (batch
rows, or audio frames → samples). A batch larger than every signature's runs in slices.

Inputs and outputs that static int8 quantization made int8 are (de)quantized here with the
tensor's scale and zero point, so tasks always feed and read float.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, BadRequest, BundleError
from ..device.profiles import Profile
from ..device.system import fit_threads
from .base import TensorInfo

__all__ = ["LiteRTSession", "load_interpreter_class"]

log = logging.getLogger(__name__)

_DTYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float16): "float16",
                np.dtype(np.int32): "int32", np.dtype(np.int64): "int64",
                np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.bool_): "bool"}


def load_interpreter_class():
    """``ai_edge_litert``'s Interpreter, else ``tflite_runtime``'s, else BackendUnavailable."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        raise BackendUnavailable("no LiteRT interpreter: install the tflite extra "
                                 "(pip install 'edge-aigc[tflite]', which brings ai-edge-litert)") from None
    except Exception as exc:  # tflite-runtime 2.14 is built against numpy 1 and fails on numpy 2
        raise BackendUnavailable(f"tflite_runtime does not load here ({type(exc).__name__}: {exc}); "
                                 "it needs numpy<2 — install ai-edge-litert instead "
                                 "(pip install 'edge-aigc[tflite]')") from None


@dataclass(frozen=True)
class _Port:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float          # 0.0: not quantized
    zero_point: int

    @property
    def logical_dtype(self) -> str:
        return "float" if self.scale else _DTYPE_NAMES.get(self.dtype, str(self.dtype))


@dataclass
class _Signature:
    name: str
    runner: Any
    inputs: dict[str, _Port]
    outputs: dict[str, _Port]

    @property
    def volume(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.inputs.values())

    def holds(self, feeds: dict[str, np.ndarray]) -> bool:
        if set(feeds) != set(self.inputs):
            return False
        return all(len(a.shape) == len(self.inputs[k].shape) and
                   all(x <= y for x, y in zip(a.shape, self.inputs[k].shape)) for k, a in feeds.items())


def _ports(details: dict[str, dict]) -> dict[str, _Port]:
    ports = {}
    for name, d in details.items():
        scale, zero = d.get("quantization", (0.0, 0))
        ports[name] = _Port(name, tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]),
                            float(scale), int(zero))
    return ports


def _to_port(value: np.ndarray, port: _Port) -> np.ndarray:
    if port.scale:  # int8 input of a statically quantized model
        info = np.iinfo(port.dtype)
        q = np.rint(np.asarray(value, np.float32) / port.scale) + port.zero_point
        return np.clip(q, info.min, info.max).astype(port.dtype)
    return np.asarray(value, port.dtype)


def _from_port(value: np.ndarray, port: _Port) -> np.ndarray:
    if port.scale:
        return ((value.astype(np.float32) - port.zero_point) * port.scale).astype(np.float32)
    return value


class LiteRTSession:
    backend = "litert"

    def __init__(self, model_path: Path, profile: Profile | None, name: str = "model",
                 cache_dir: Path | None = None, threads: int | None = None):
        interpreter_class = load_interpreter_class()
        cfg = profile.tflite if profile is not None else None
        self.threads = fit_threads(cfg.threads if cfg else None, threads)
        log.info("%s: %d threads (%s)", name, self.threads.threads, self.threads.reason)
        try:
            self._interp = interpreter_class(model_path=str(model_path), num_threads=self.threads.threads)
            names = list(self._interp.get_signature_list())
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{name}: LiteRT cannot load {Path(model_path).name}: {exc}") from None
        if not names:
            raise BundleError(f"{name}: {Path(model_path).name} has no signatures; convert it with "
                              "edge-aigc convert --format tflite")
        self.name = name
        self.signatures: dict[str, _Signature] = {}
        for sig in names:
            runner = self._interp.get_signature_runner(sig)
            self.signatures[sig] = _Signature(sig, runner, _ports(runner.get_input_details()),
                                              _ports(runner.get_output_details()))
        self._by_size = sorted(self.signatures.values(), key=lambda s: s.volume)
        self.providers = ("XNNPACK",)  # the interpreter applies the XNNPACK CPU delegate by default

    def _info(self, which: str) -> list[TensorInfo]:
        """One entry per tensor name; axes that differ between signatures are reported as None."""
        merged: dict[str, list[_Port]] = {}
        for sig in self._by_size:
            for port in getattr(sig, which).values():
                merged.setdefault(port.name, []).append(port)
        infos = []
        for name, ports in merged.items():
            shapes = {p.shape for p in ports}
            shape = ports[0].shape if len(shapes) == 1 else tuple(
                dims.pop() if len(dims := {s[i] for s in shapes if len(s) > i}) == 1 else None
                for i in range(max(len(s) for s in shapes)))
            infos.append(TensorInfo(name, ports[0].logical_dtype, tuple(shape)))
        return infos

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._info("inputs")

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._info("outputs")

    def run_signature(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature as is: feeds must match its shapes exactly (by keyword, any order)."""
        sig = self.signatures[name]
        raw = sig.runner(**{k: _to_port(v, sig.inputs[k]) for k, v in feeds.items()})
        return {k: _from_port(v, sig.outputs[k]) for k, v in raw.items()}

    def _too_large(self, feeds: dict[str, np.ndarray]) -> BadRequest:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
        return BadRequest(f"{self.name}: inputs ({shapes}) exceed every shape the model was "
                          f"exported at (largest: {self._by_size[-1].name})")

    def _fit(self, feeds: dict[str, np.ndarray]) -> _Signature | None:
        return next((s for s in self._by_size if s.holds(feeds)), None)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig = self._fit(feeds)
        if sig is None:
            rows = {v.shape[0] if v.ndim else 0 for v in feeds.values()}
            if len(rows) == 1 and (n := rows.pop()) > 1:  # a batch larger than any signature's
                return self._run_in_batches(feeds, n)
            raise self._too_large(feeds)
        padded, scaled = {}, {}  # scaled: axis -> (actual, exported) for inputs that were padded
        for k, value in feeds.items():
            target = sig.inputs[k].shape
            pad = [(0, t - s) for s, t in zip(value.shape, target)]
            for axis, (_, extra) in enumerate(pad):
                if extra:
                    scaled[axis] = (value.shape[axis], target[axis])
            padded[k] = np.pad(value, pad) if any(e for _, e in pad) else value
        outputs = self.run_signature(sig.name, padded)
        return {k: self._trim(v, scaled) for k, v in sorted(outputs.items())}

    def _run_in_batches(self, feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        step = max((b for b in range(1, n) if self._fit({k: v[:b] for k, v in feeds.items()})), default=0)
        if not step:
            raise self._too_large(feeds)
        parts = [self.run({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    @staticmethod
    def _trim(value: np.ndarray, scaled: dict[int, tuple[int, int]]) -> np.ndarray:
        index = []
        for axis, size in enumerate(value.shape):
            actual, exported = scaled.get(axis, (size, size))
            index.append(slice(0, actual * size // exported) if size % exported == 0 else slice(None))
        return value[tuple(index)]

    def native(self) -> Any:
        return self._interp
