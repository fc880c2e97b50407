"""Next-token choice from logits: repetition penalty, temperature, top-k, top-p, seeded sampling."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SamplingConfig", "choose_next", "log_softmax"]


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8   # 0 = greedy
    top_k: int = 40            # 0 = no limit
    top_p: float = 0.95
    repetition_penalty: float = 1.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def apply_repetition_penalty(logits: np.ndarray, seen, penalty: float) -> np.ndarray:
    """CTRL-style, as transformers does it: shrink the logits of tokens already present.

    ``seen`` is any sequence of token ids; it is deduplicated only when a penalty applies,
    so the default (1.0) costs nothing in the per-token loop."""
    if penalty == 1.0 or len(seen) == 0:
        return logits
    seen = np.unique(np.asarray(seen))
    logits = logits.copy()
    picked = logits[seen]
    logits[seen] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def choose_next(logits: np.ndarray, cfg: SamplingConfig, seen,
                rng: np.random.Generator) -> int:
    """One token id from a [vocab] logits row."""
    logits = apply_repetition_penalty(logits.astype(np.float64), seen, cfg.repetition_penalty)
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.size:
        kth = np.partition(logits, -cfg.top_k)[-cfg.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(log_softmax(logits))
    if cfg.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, cfg.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(probs.size, p=probs))
