"""llama.cpp as a backend, through llama-cpp-python's C API (the ``[llama]`` extra).

A ``gguf`` bundle holds a GGUF file. Its session loads the weights once (memory-mapped, as
llama.cpp does); each conversation's KV cache is a llama.cpp context of its own, opened by the
text task's decode loop (tasks/text/llama_loop.py), which hands the engine's logits to the
kit's own sampler: one seed is one sampling procedure on either engine. A GGUF bundle is never
run as a graph of named tensors (``run`` says so).
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..device.profiles import Profile
from ..device.system import advertises_amx, fit_threads
from ..errors import BackendUnavailable, BundleError
from .base import TensorInfo

__all__ = ["LlamaCppSession", "llama"]

log = logging.getLogger(__name__)
_QUIET: list = []   # the log callback, kept alive for as long as llama.cpp may call it


def llama():
    """The llama_cpp module, with llama.cpp's own logging quieted (ours says what matters)."""
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailable("gguf bundles run on llama.cpp: pip install 'edge-aigc[llama]' "
                                 "(docs/deploy.md has the build flags per device)") from None
    if not _QUIET:
        callback = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _QUIET.append(callback)
    return llama_cpp


class LlamaCppSession:
    backend = "llama.cpp"

    def __init__(self, model_path: Path, profile: Profile | None, name: str = "model",
                 cache_dir: Path | None = None, threads: int | None = None):
        lib = llama()
        cfg = profile.onnx if profile is not None else None  # the profile's CPU threads serve both engines
        self.threads = fit_threads(cfg.threads if cfg else None, threads)
        self.name, self.providers = name, ("llama.cpp CPU",)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_extra_bufts = not advertises_amx()  # no weight repacking where AMX kernels die
        self._model = lib.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise BundleError(f"{name}: llama.cpp cannot load {Path(model_path).name} (not a GGUF model it knows)")
        self._lib = lib
        self.vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        log.info("%s: llama.cpp, %d threads (%s)", name, self.threads.threads, self.threads.reason)

    @property
    def inputs(self) -> list[TensorInfo]:
        return []

    @property
    def outputs(self) -> list[TensorInfo]:
        return []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise BundleError(f"{self.name}: a gguf bundle runs through its decode loop, not as a graph")

    def native(self) -> Any:
        return self._model

    def __del__(self) -> None:
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None
