"""ONNX Runtime backend: the profile's provider list with fallback, threads, graph optimization.

A provider the device lacks is skipped with a warning, never a crash. TensorRT gets
fp16 and an engine cache under the state directory: engines are not portable across
GPUs or TensorRT versions, so the device builds one on first load and reuses it.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import BackendUnavailable, BundleError
from ..device.profiles import DYNAMIC_BLOCK_BASE, Profile
from ..device.system import fit_threads
from .base import TensorInfo

__all__ = ["OnnxSession", "resolve_providers", "onnxruntime_errors", "foreign_errors"]

log = logging.getLogger(__name__)
_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def resolve_providers(wanted: tuple[str, ...], available: list[str], model: str) -> list[str]:
    """Wanted providers that exist here, in order; CPU is always the last resort."""
    chosen = [p for p in wanted if p in available]
    for p in wanted:
        if p not in available:
            log.warning("%s: %s is not available in this onnxruntime build; falling back to %s",
                        model, p, (chosen or ["CPUExecutionProvider"])[0])
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _provider_options(provider: str, cache_dir: Path | None) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider":
        opts: dict[str, Any] = {"trt_fp16_enable": True}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        return opts
    return {}


def foreign_errors() -> tuple[type[BaseException], ...]:
    """What ONNX Runtime raises when it cannot create a session: its pybind11 error types
    (Fail, InvalidArgument, NoSuchFile, InvalidProtobuf, …, all RuntimeError subclasses)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)]
    return tuple(found) + (RuntimeError, ValueError)


@contextmanager
def onnxruntime_errors(model: str, path: Path) -> Iterator[None]:
    """ONNX Runtime's load errors as ``BundleError``: one line, naming the file as the bundle does."""
    try:
        yield
    except foreign_errors() as exc:
        text = str(exc).strip().replace(str(path), path.name)
        first = text.splitlines()[0] if text else type(exc).__name__
        raise BundleError(f"{model}: ONNX Runtime cannot load {path.name}: {first}") from None


class OnnxSession:
    backend = "onnxruntime"

    def __init__(self, model_path: Path, profile: Profile | None, name: str = "model",
                 cache_dir: Path | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
        cfg = profile.onnx if profile is not None else None
        so = ort.SessionOptions()
        self.threads = fit_threads(cfg.threads if cfg else None, threads)
        log.info("%s: %d intra-op threads (%s)", name, self.threads.threads, self.threads.reason)
        so.intra_op_num_threads = self.threads.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _GRAPH_OPT[cfg.graph_optimization if cfg else "all"])
        block_base = cfg.dynamic_block_base if cfg else DYNAMIC_BLOCK_BASE
        if block_base and self.threads.threads > 1:
            so.add_session_config_entry("session.dynamic_block_base", str(block_base))
        so.log_severity_level = 3  # errors only; our own logging says what matters
        wanted = cfg.providers if cfg else ("CPUExecutionProvider",)
        providers = resolve_providers(wanted, ort.get_available_providers(), name)
        options = [_provider_options(p, cache_dir) for p in providers]
        with onnxruntime_errors(name, Path(model_path)):
            self._sess = ort.InferenceSession(str(model_path), so, providers=providers,
                                              provider_options=options)
        self.providers = tuple(self._sess.get_providers())

    @staticmethod
    def _info(args) -> list[TensorInfo]:
        return [TensorInfo(a.name, a.type.removeprefix("tensor(").removesuffix(")"), tuple(a.shape))
                for a in args]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._info(self._sess.get_inputs())

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._info(self._sess.get_outputs())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._sess.get_outputs()]
        return dict(zip(names, self._sess.run(names, feeds)))

    def native(self) -> Any:
        return self._sess
