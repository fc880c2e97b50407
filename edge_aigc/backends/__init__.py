"""Inference backends, chosen by the bundle's format through an explicit dict."""
from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable
from ..device.profiles import Profile
from .base import Session, TensorInfo
from .litert import LiteRTSession
from .llamacpp import LlamaCppSession
from .onnxruntime import OnnxSession

__all__ = ["Session", "TensorInfo", "BACKENDS", "open_session"]

# format -> session class. Each imports its runtime when a session opens, so a device
# without the tflite extra still loads ONNX bundles.
BACKENDS = {"onnx": OnnxSession, "tflite": LiteRTSession, "gguf": LlamaCppSession}


def open_session(fmt: str, model_path: Path, profile: Profile | None, name: str,
                 cache_dir: Path | None = None, threads: int | None = None) -> Session:
    if fmt not in BACKENDS:
        raise BackendUnavailable(f"{name}: no backend for {fmt!r} bundles in this version "
                                 f"(available: {', '.join(BACKENDS)})")
    return BACKENDS[fmt](model_path, profile, name=name, cache_dir=cache_dir, threads=threads)
