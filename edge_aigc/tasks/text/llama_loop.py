"""The decode loop of a ``gguf`` bundle: llama.cpp computes, the text task samples.

Each state is a llama.cpp context (its KV cache) for one sequence; ``step`` decodes the given
token ids at the next positions and returns the logits of every one of them, as the ONNX loops
do, so the task's sampler, stop strings, streaming and chat sessions work unchanged. A chat
session keeps its context between turns; ``truncate`` drops the cache past a prefix. Beam
search needs several sequences in one step and is refused, naming the engine.
"""
from __future__ import annotations

import ctypes
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...backends.llamacpp import LlamaCppSession
from ...bundle.task_config import TextConfig
from ...errors import BadRequest, BundleError

__all__ = ["LlamaCppLoop"]

BATCH = 512         # tokens per llama.cpp batch (its default n_batch)
IDLE_CONTEXTS = 1   # finished conversations' contexts kept for reuse, per model


@dataclass
class _State:
    ctx: Any
    length: int = 0                              # tokens in the cache
    finalizer: Any = field(default=None, repr=False)


class LlamaCppLoop:
    def __init__(self, session: LlamaCppSession, cfg: TextConfig):
        self.session, self.lib = session, session._lib
        train = session.n_ctx_train or cfg.max_context
        self.cache_length = min(cfg.max_context, train)
        self.n_vocab = session.n_vocab
        self._idle: list[Any] = []   # contexts of finished conversations, ready to reuse

    def start(self, batch: int = 1) -> _State:
        if batch != 1:
            raise BadRequest("beam search (num_beams > 1) is not available on the llama.cpp engine; "
                             "use num_beams 1 (sampling or greedy)")
        lib = self.lib
        ctx = self._idle.pop() if self._idle else None
        if ctx is not None:  # a finished conversation's context, emptied: no new allocation
            lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        else:
            ctx = self._open_context()
        state = _State(ctx)
        state.finalizer = weakref.finalize(state, self._release, ctx)
        return state

    def _open_context(self) -> Any:
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = self.cache_length
        # a batch of at most BATCH tokens: llama.cpp sizes its compute buffers by it (a whole
        # 8,192-token context as one batch made every new context cost ~80 ms and ~100 MB more)
        params.n_batch = params.n_ubatch = min(BATCH, self.cache_length)
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.session.threads.threads
        ctx = lib.llama_init_from_model(self.session.native(), params)
        if not ctx:
            raise BundleError(f"{self.session.name}: llama.cpp could not open a context of {self.cache_length} tokens")
        return ctx

    def _release(self, ctx: Any) -> None:
        """A conversation's context, when its state is gone: kept for the next one (opening one
        of 8,192 tokens took ~70 ms here), or freed when one is kept already."""
        if len(self._idle) < IDLE_CONTEXTS:
            self._idle.append(ctx)
        else:
            self.lib.llama_free(ctx)

    def step(self, state: _State, ids: Any) -> np.ndarray:
        """Logits [1, n, vocab] for the ``n`` ids, fed at the positions after the cache."""
        ids = np.asarray(ids)
        if ids.shape[0] != 1:
            raise BadRequest("the llama.cpp engine decodes one sequence at a time")
        tokens = [int(t) for t in ids[0]]
        n = len(tokens)
        if state.length + n > self.cache_length:
            raise BadRequest(f"the conversation needs {state.length + n} tokens; the context holds {self.cache_length}")
        parts = [self._decode(state, tokens[i:i + BATCH]) for i in range(0, n, BATCH)]
        return np.concatenate(parts)[None]

    def _decode(self, state: _State, tokens: list[int]) -> np.ndarray:
        """One llama.cpp batch at the next positions; the logits of every token in it."""
        lib, n = self.lib, len(tokens)
        batch = lib.llama_batch_init(n, 0, 1)
        try:
            batch.n_tokens = n
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, state.length + i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, 1
            if lib.llama_decode(state.ctx, batch) != 0:
                raise BundleError(f"{self.session.name}: llama.cpp could not decode {n} token(s)")
        finally:
            lib.llama_batch_free(batch)
        state.length += n
        pointer = lib.llama_get_logits(state.ctx)
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n, self.n_vocab)).copy()

    def reorder(self, state: _State, rows: Any) -> None:
        raise BadRequest("beam search (num_beams > 1) is not available on the llama.cpp engine")

    def truncate(self, state: _State, length: int) -> None:
        """Keep the first ``length`` tokens of the cache (a chat session's shared prefix)."""
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(state.ctx), 0, length, -1)
        state.length = min(state.length, length)

    def state_bytes(self, state: _State) -> int:
        return int(self.lib.llama_state_get_size(state.ctx))

    def __del__(self) -> None:  # the loop (and so its session's model) outlives every context it opened
        for ctx in getattr(self, "_idle", ()):
            self.lib.llama_free(ctx)
        self._idle = []
