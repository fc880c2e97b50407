"""LiteRtKvLoop: prefill and decode over a TFLite causal LM with a fixed-size KV cache.

The converter exports an LM as signatures ``prefill_<n>`` (n tokens at once) and ``decode``
(one token), all taking ``tokens`` [1, n] int32, ``input_pos`` [n] int32 and the cache
``k_<layer>``/``v_<layer>`` [1, kv_heads, cache_len, head_dim], and returning ``logits``
[1, n, vocab] plus the cache with the new entries written at ``input_pos``. Attention sees
cache slots before ``input_pos[0]`` and the new tokens causally, so a prompt padded up to a
prefill size gives exact results: the padding's cache slots are masked now and overwritten
by the next step. Same interface as :class:`ConcatKvLoop`; beam rows run one at a time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...backends.base import Session
from ...errors import BadRequest, BundleError
from ...bundle.task_config import TextConfig

__all__ = ["LiteRtKvLoop", "LiteRtKvState"]

_PREFILL = re.compile(r"prefill_(\d+)$")


@dataclass
class LiteRtKvState:
    rows: list[dict[str, np.ndarray]]    # one cache (name -> array) per batch row
    length: int = 0
    steps: int = 0

    @property
    def batch(self) -> int:
        return len(self.rows)


class LiteRtKvLoop:
    def __init__(self, session: Session, cfg: TextConfig):
        self._session = session
        self.layers = cfg.num_layers
        self.cache_names = [f"{k}_{i}" for i in range(self.layers) for k in ("k", "v")]
        sigs = session.signatures
        if "decode" not in sigs or not all(n in sigs["decode"].inputs for n in self.cache_names):
            raise BundleError("TFLite text model lacks a 'decode' signature with k_<layer>/v_<layer> "
                              "cache inputs; re-convert it with edge-aigc convert --format tflite")
        self.sizes = sorted([1] + [int(m.group(1)) for s in sigs if (m := _PREFILL.match(s))])
        self._port_shape = sigs["decode"].inputs["k_0"].shape
        self.cache_length = int(self._port_shape[2])

    def _signature(self, size: int) -> str:
        return "decode" if size == 1 else f"prefill_{size}"

    def start(self, batch: int = 1) -> LiteRtKvState:
        empty = np.zeros(self._port_shape, np.float32)
        return LiteRtKvState([{n: empty for n in self.cache_names} for _ in range(batch)])

    def _chunk(self, position: int, remaining: int) -> int:
        """The signature size for the next chunk: the smallest that takes all that remains,
        else the largest; never one that would write past the end of the cache."""
        fits = [s for s in self.sizes if position + s <= self.cache_length]
        if not fits:
            raise BadRequest(f"text exceeds the model's KV cache of {self.cache_length} tokens")
        return min((s for s in fits if s >= remaining), default=fits[-1])

    def _row(self, cache: dict[str, np.ndarray], ids: np.ndarray, position: int):
        logits = []
        done = 0
        while done < len(ids):
            size = self._chunk(position + done, len(ids) - done)
            take = min(size, len(ids) - done)
            tokens = np.zeros((1, size), np.int32)
            tokens[0, :take] = ids[done:done + take]
            out = self._session.run_signature(self._signature(size), {
                "tokens": tokens, "input_pos": np.arange(position + done, position + done + size, dtype=np.int32),
                **cache})
            cache = {n: out[n] for n in self.cache_names}
            logits.append(out["logits"][:, :take])
            done += take
        return cache, np.concatenate(logits, axis=1)

    def step(self, state: LiteRtKvState, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        """Feed ``ids`` [batch, n] after the cached tokens; returns logits [batch, n, vocab]
        ([batch, 1, vocab], the last position's, with ``last_only``)."""
        ids = np.asarray(ids)
        results = [self._row(cache, row, state.length) for cache, row in zip(state.rows, ids)]
        state.rows = [cache for cache, _ in results]
        state.length += ids.shape[1]
        state.steps += 1
        logits = np.concatenate([logits for _, logits in results], axis=0)
        return logits[:, -1:] if last_only else logits

    def truncate(self, state: LiteRtKvState, length: int) -> None:
        """Keep the first ``length`` cached tokens: the fixed cache is written by position, and
        attention masks positions past the one being decoded."""
        state.length = length

    def state_bytes(self, state: LiteRtKvState) -> int:
        return sum(a.nbytes for row in state.rows for a in row.values())

    def reorder(self, state: LiteRtKvState, rows: np.ndarray) -> None:
        """Keep cache rows ``rows`` (beam parents), in that order. Arrays are never written in
        place, so two beams may share a parent's arrays."""
        state.rows = [state.rows[int(r)] for r in rows]
