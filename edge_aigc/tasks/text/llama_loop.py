"""The decode loop of a ``gguf`` bundle: llama.cpp computes, the text task samples.

Each state is a llama.cpp context (its KV cache) for one sequence; ``step`` decodes the given
token ids at the next positions and returns the logits of every one of them (or, for a
prefill, of the last), as the ONNX loops do, so the task's sampler, stop strings, streaming,
drafts and chat sessions work unchanged. A chat session keeps its context between turns;
``truncate`` drops the cache past a prefix. Beam search needs several sequences in one step
and is refused, naming the engine.

Memory: llama.cpp allocates a context's whole KV cache (f16) and clears it when it opens, so
a context starts at ``MIN_CONTEXT`` tokens and is replaced by one twice as long, the sequence
copied over, when a conversation outgrows it (as the ONNX loop's buffers grow); and it
allocates room for the logits of as many positions as a batch asks for, so a prefill asks
for its last position's only.
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
MIN_CONTEXT = 512   # tokens a new context holds; doubled as a conversation grows
IDLE_CONTEXTS = 1   # finished conversations' contexts kept for reuse, per model


@dataclass
class _State:
    ctx: Any
    size: int                                    # tokens the context holds
    length: int = 0                              # tokens in the cache
    finalizer: Any = field(default=None, repr=False)


class LlamaCppLoop:
    def __init__(self, session: LlamaCppSession, cfg: TextConfig):
        self.session, self.lib = session, session._lib
        train = session.n_ctx_train or cfg.max_context
        self.cache_length = min(cfg.max_context, train)
        self.n_vocab = session.n_vocab
        self._idle: list[tuple[Any, int]] = []   # (context, size) of finished conversations
        lib, model = self.lib, session.native()
        head_dim = lib.llama_model_n_embd(model) // max(lib.llama_model_n_head(model), 1)
        self.token_bytes = 2 * 2 * lib.llama_model_n_layer(model) * lib.llama_model_n_head_kv(model) * head_dim

    def start(self, batch: int = 1) -> _State:
        if batch != 1:
            raise BadRequest("beam search (num_beams > 1) is not available on the llama.cpp engine; "
                             "use num_beams 1 (sampling or greedy)")
        if self._idle:  # a finished conversation's context, emptied: no new allocation
            ctx, size = self._idle.pop()
            self.lib.llama_memory_clear(self.lib.llama_get_memory(ctx), True)
        else:
            size = min(MIN_CONTEXT, self.cache_length)
            ctx = self._open_context(size)
        return self._adopt(_State(ctx, size), ctx, size)

    def _adopt(self, state: _State, ctx: Any, size: int) -> _State:
        if state.finalizer is not None:
            state.finalizer.detach()
        state.ctx, state.size = ctx, size
        state.finalizer = weakref.finalize(state, self._release, ctx, size)
        return state

    def _open_context(self, size: int) -> Any:
        lib = self.lib
        params = lib.llama_context_default_params()
        params.n_ctx = size
        # a batch of at most BATCH tokens: llama.cpp sizes its compute buffers by it (a whole
        # 8,192-token context as one batch made every new context cost ~80 ms and ~100 MB more)
        params.n_batch = params.n_ubatch = min(BATCH, size)
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.session.threads.threads
        ctx = lib.llama_init_from_model(self.session.native(), params)
        if not ctx:
            raise BundleError(f"{self.session.name}: llama.cpp could not open a context of {size} tokens")
        return ctx

    def _grow(self, state: _State, needed: int) -> None:
        """A context long enough for ``needed`` tokens, the sequence copied into it."""
        size = state.size
        while size < needed:
            size *= 2
        size = min(size, self.cache_length)
        lib, ctx = self.lib, self._open_context(size)
        data = (ctypes.c_uint8 * lib.llama_state_seq_get_size(state.ctx, 0))()
        written = lib.llama_state_seq_get_data(state.ctx, data, len(data), 0)
        if lib.llama_state_seq_set_data(ctx, data, written, 0) != written:
            lib.llama_free(ctx)
            raise BundleError(f"{self.session.name}: llama.cpp could not move a conversation to a longer context")
        old, old_size = state.ctx, state.size
        self._adopt(state, ctx, size)
        self._release(old, old_size)

    def _release(self, ctx: Any, size: int) -> None:
        """A conversation's context, when its state is gone: kept for the next one (opening one
        of 8,192 tokens took ~70 ms here), or freed when one is kept already."""
        if len(self._idle) < IDLE_CONTEXTS:
            self._idle.append((ctx, size))
        else:
            self.lib.llama_free(ctx)

    def step(self, state: _State, ids: Any, last_only: bool = False) -> np.ndarray:
        """Logits [1, n, vocab] for the ``n`` ids, fed at the positions after the cache (with
        ``last_only``, [1, 1, vocab] for the last of them)."""
        ids = np.asarray(ids)
        if ids.shape[0] != 1:
            raise BadRequest("the llama.cpp engine decodes one sequence at a time")
        tokens = [int(t) for t in ids[0]]
        n = len(tokens)
        if state.length + n > self.cache_length:
            raise BadRequest(f"the conversation needs {state.length + n} tokens; the context holds {self.cache_length}")
        if state.length + n > state.size:
            self._grow(state, state.length + n)
        parts = [self._decode(state, tokens[i:i + BATCH], last_only and i + BATCH < n, last_only)
                 for i in range(0, n, BATCH)]
        return np.concatenate([p for p in parts if p is not None])[None]

    def _decode(self, state: _State, tokens: list[int], none: bool = False, last: bool = False) -> np.ndarray | None:
        """One llama.cpp batch at the next positions; the logits of every token in it (of the
        last only with ``last``, of none with ``none``)."""
        lib, n = self.lib, len(tokens)
        outputs = 0 if none else 1 if last else n
        batch = lib.llama_batch_init(n, 0, 1)
        try:
            batch.n_tokens = n
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, state.length + i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, int(i >= n - outputs)
            if lib.llama_decode(state.ctx, batch) != 0:
                raise BundleError(f"{self.session.name}: llama.cpp could not decode {n} token(s)")
        finally:
            lib.llama_batch_free(batch)
        state.length += n
        if not outputs:
            return None
        pointer = lib.llama_get_logits(state.ctx)
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                     shape=(outputs, self.n_vocab)).copy()

    def reorder(self, state: _State, rows: Any) -> None:
        raise BadRequest("beam search (num_beams > 1) is not available on the llama.cpp engine")

    def truncate(self, state: _State, length: int) -> None:
        """Keep the first ``length`` tokens of the cache (a chat session's shared prefix)."""
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(state.ctx), 0, length, -1)
        state.length = min(state.length, length)

    def state_bytes(self, state: _State) -> int:
        """What the context holds in memory: its whole f16 KV cache, used or not."""
        return state.size * self.token_bytes

    def __del__(self) -> None:  # the loop (and so its session's model) outlives every context it opened
        for ctx, _ in getattr(self, "_idle", ()):
            self.lib.llama_free(ctx)
        self._idle = []
