"""SharedKvLoop: decode over an LM whose attention writes the new keys/values in place.

Models built with onnxruntime-genai's builder (``kv_layout: shared`` in the manifest) use
``GroupQueryAttention``: when ``past_key_values.*`` and ``present.*`` are bound to the
same buffer, the op appends the new entries at each row's length and attends over the
filled part only, so a decode step copies nothing and costs the same at any position.
Inputs per step: ``input_ids`` [batch, n] and ``attention_mask`` [batch, length + n] (the
graph derives positions and lengths from it). The buffers are numpy arrays wrapped as
``OrtValue``s without a copy; they start at ``INITIAL_CAPACITY`` slots and double when
full (up to the model's context), so short generations stay small in memory. Same
interface as :class:`ConcatKvLoop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backends.base import Session
from ...errors import BadRequest, BundleError
from ...bundle.task_config import TextConfig
from .concat_loop import kv_names

__all__ = ["SharedKvLoop", "SharedKvState", "INITIAL_CAPACITY"]

INITIAL_CAPACITY = 256
ALIGN = 64  # bytes: a cache line, as ONNX Runtime aligns its own tensors (numpy gives 16)


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    raw = np.zeros(int(np.prod(shape)) * dtype.itemsize + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)


@dataclass
class SharedKvState:
    buffers: list[np.ndarray]    # [batch, kv_heads, capacity, head_dim] per past input
    values: list[Any]            # OrtValues over those buffers
    binding: Any                 # IO binding with the cache bound as input and output
    logits: np.ndarray           # [batch, 1, vocab]: where one-token steps write their logits
    logits_value: Any
    length: int = 0
    steps: int = 0

    @property
    def batch(self) -> int:
        return self.buffers[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.buffers[0].shape[2]


class SharedKvLoop:
    def __init__(self, session: Session, cfg: TextConfig):
        import onnxruntime as ort

        self._ort, self._sess = ort, session.native()
        self.past_names, self.present_names = kv_names(cfg)
        self.kv_heads, self.head_dim = cfg.num_kv_heads, cfg.head_dim
        self.cache_length = cfg.max_context
        types = {i.name: i.dtype for i in session.inputs}
        missing = [n for n in ("input_ids", "attention_mask", *self.past_names) if n not in types]
        if missing:
            raise BundleError(f"text model lacks inputs {missing[:3]} for kv_layout 'shared'; "
                              "re-export it with edge-aigc convert")
        self.dtype = np.dtype({"float": np.float32, "float16": np.float16}.get(types[self.past_names[0]],
                                                                               np.float32))
        self._ones = np.ones((1, self.cache_length), np.int64)
        vocab = next((o.shape[-1] for o in session.outputs if o.name == "logits"), None)
        self.vocab = vocab if isinstance(vocab, int) else cfg.vocab_size

    def start(self, batch: int = 1) -> SharedKvState:
        shape = (batch, self.kv_heads, min(INITIAL_CAPACITY, self.cache_length), self.head_dim)
        return self._bind([_zeros(shape, self.dtype) for _ in self.past_names], 0)

    def _bind(self, buffers: list[np.ndarray], length: int) -> SharedKvState:
        values = [self._ort.OrtValue.ortvalue_from_numpy(b) for b in buffers]
        binding = self._sess.io_binding()
        binding.bind_output("logits", "cpu")  # first, so get_outputs()[0] is the logits
        for past, present, value in zip(self.past_names, self.present_names, values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        logits = _zeros((buffers[0].shape[0], 1, self.vocab), np.dtype(np.float32))
        return SharedKvState(buffers, values, binding, logits, self._ort.OrtValue.ortvalue_from_numpy(logits),
                             length)

    def _grow(self, state: SharedKvState, needed: int) -> SharedKvState:
        capacity = state.capacity
        while capacity < needed:
            capacity *= 2
        capacity = min(capacity, self.cache_length)
        grown = []
        for old in state.buffers:
            new = _zeros(old.shape[:2] + (capacity,) + old.shape[3:], old.dtype)
            new[:, :, :state.length] = old[:, :, :state.length]
            grown.append(new)
        return self._bind(grown, state.length)

    def step(self, state: SharedKvState, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        """Feed ``ids`` [batch, n] after the cached tokens; returns logits [batch, n, vocab]
        ([batch, 1, vocab], the last position's, with ``last_only``)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        total = state.length + ids.shape[1]
        if total > self.cache_length:
            raise BadRequest(f"{total} tokens exceed the model's context of {self.cache_length}")
        if total > state.capacity:
            self._adopt(state, self._grow(state, total))
        mask = self._ones[:, :total] if state.batch == 1 else np.ones((state.batch, total), np.int64)
        binding = state.binding
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        one = ids.shape[1] == 1  # decode: logits into the state's own buffer, no allocation
        if one:
            binding.bind_ortvalue_output("logits", state.logits_value)
        else:
            binding.bind_output("logits", "cpu")  # a fresh one, shaped by ORT
        self._sess.run_with_iobinding(binding)
        state.length, state.steps = total, state.steps + 1
        logits = state.logits.copy() if one else binding.get_outputs()[0].numpy()
        return logits[:, -1:] if last_only else logits

    @staticmethod
    def _adopt(state: SharedKvState, fresh: SharedKvState) -> None:
        state.buffers, state.values, state.binding = fresh.buffers, fresh.values, fresh.binding
        state.logits, state.logits_value = fresh.logits, fresh.logits_value

    def truncate(self, state: SharedKvState, length: int) -> None:
        """Keep the first ``length`` cached tokens: later positions are written over."""
        state.length = length

    def state_bytes(self, state: SharedKvState) -> int:
        return sum(b.nbytes for b in state.buffers)

    def reorder(self, state: SharedKvState, rows: np.ndarray) -> None:
        """Keep cache rows ``rows`` (beam parents), in that order; the batch may change size."""
        rows = np.asarray(rows)
        picked = []
        for b in state.buffers:
            new = _zeros((len(rows),) + b.shape[1:], b.dtype)
            np.take(b, rows, axis=0, out=new)
            picked.append(new)
        self._adopt(state, self._bind(picked, state.length))
