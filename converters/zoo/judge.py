"""The judge of generated digits: a small CNN trained on real MNIST only, and the bars it sets.

Trained on the 4,000 training digits of converters/zoo/mnist.py (±2 px shifts), graded on the
1,000 held out (≥ 98% is required before it may judge). Its weights are committed in
``artifacts/digits-judge.pt`` (re-made, seeded, by ``python -m converters.zoo.judge``) so that
tests judge the shipped bundles without training anything.

Bars (:func:`bars`, on 100 seeded samples of each class):

- ``class_accuracy``: share recognised as the requested class;
- ``diversity_ratio``: mean pairwise pixel distance within a class, generated over real
  (averaged over the classes);
- ``frechet``: Fréchet distance between generated and held-out real digits in the judge's
  128-d feature space, next to ``frechet_real`` (training vs held-out real digits: the value
  two samples of the real data are apart).

For generators whose class input takes weights (the VAE), :func:`morph_bars` grades class
morphs: whether a digit turns into the other once, and how evenly the frames move.
"""
from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .mnist import CLASSES, SIZE, digits

SEED = 1234
WEIGHTS = Path(__file__).parent / "artifacts" / "digits-judge.pt"
MIN_HELD_OUT_ACCURACY = 0.98
LATENT = 100


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                    nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(),
                                      nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return padded[:, :, 2 + dy:2 + dy + SIZE, 2 + dx:2 + dx + SIZE]


def _predict(judge: Judge, x: np.ndarray, features: bool = False) -> np.ndarray:
    with torch.no_grad():
        out = [(judge.features if features else judge)(torch.tensor(x[i:i + 500], dtype=torch.float32))
               for i in range(0, len(x), 500)]
    return torch.cat(out).numpy()


def train(epochs: int = 12, batch: int = 64) -> tuple[Judge, float]:
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    x, y = (torch.tensor(a) for a in digits("train"))
    judge = Judge()
    opt = torch.optim.Adam(judge.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * (len(x) // batch))
    for _ in range(epochs):
        judge.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            loss = nn.functional.cross_entropy(judge(_shift(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    judge.eval()
    held_x, held_y = digits("held-out")
    return judge, float((_predict(judge, held_x).argmax(1) == held_y).mean())


@lru_cache(maxsize=1)
def load() -> Judge:
    judge = Judge()
    judge.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return judge.eval()


def _mean_pairwise(x: np.ndarray) -> float:
    x = x.reshape(len(x), -1).astype(np.float64)
    sq = (x ** 2).sum(1)
    d = np.sqrt(np.clip(sq[:, None] + sq[None] - 2 * x @ x.T, 0, None))
    return float(d[np.triu_indices(len(x), 1)].mean())


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(m)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (as FID does). The
    trace of sqrt(A B) is taken as that of sqrt(sqrt(A) B sqrt(A)), symmetric: ReLU features
    that never fire make the covariances singular, where a general matrix root is unstable."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def samples(generate: Callable[[np.ndarray, np.ndarray], np.ndarray], per_class: int = 100,
            latent: int = LATENT):
    """Seeded latents and labels (``per_class`` of each), and what ``generate`` makes of them."""
    rng = np.random.default_rng(SEED)
    z = rng.standard_normal((per_class * CLASSES, latent)).astype(np.float32)
    y = np.repeat(np.arange(CLASSES, dtype=np.int32), per_class)  # the Keras model takes int32
    fake = np.concatenate([generate(z[i:i + 100], y[i:i + 100]) for i in range(0, len(z), 100)])
    return z, y, fake


def bars(generate: Callable[[np.ndarray, np.ndarray], np.ndarray], per_class: int = 100,
         latent: int = LATENT) -> dict:
    """The judge's figures for a generator ``(z [N, latent], labels [N]) -> [N, 1, 28, 28]``."""
    judge = load()
    _, y, fake = samples(generate, per_class, latent)
    real, labels = digits("all")
    train_x, _ = digits("train")
    held_x, _ = digits("held-out")
    ratios = [_mean_pairwise(fake[y == c]) / _mean_pairwise(real[labels == c]) for c in range(CLASSES)]
    held_f = _predict(judge, held_x, features=True)
    rng = np.random.default_rng(SEED)
    real_f = _predict(judge, train_x[rng.permutation(len(train_x))[:len(held_x)]], features=True)
    return {"class_accuracy": round(float((_predict(judge, fake).argmax(1) == y).mean()), 4),
            "diversity_ratio": round(float(np.mean(ratios)), 4),
            "diversity_by_class": [round(r, 3) for r in ratios],
            "frechet": round(frechet(_predict(judge, fake, features=True), held_f), 2),
            "frechet_real": round(frechet(real_f, held_f), 2),
            "samples": int(len(y))}


def morph_bars(blend: Callable[[np.ndarray, np.ndarray], np.ndarray], latent: int, pairs: int = 200,
               steps: int = 9) -> dict:
    """Class morphs of a generator whose class input takes weights, ``(z [N, latent],
    weights [N, 10]) -> [N, 1, 28, 28]``: for seeded pairs of classes (a, b) and one latent,
    ``steps`` frames from a to b. ``morph_clean``: the share whose judged classes start at a,
    end at b and, once b appears, stay b (the digit turns into the other once);
    ``morph_jump``: the largest step between consecutive frames over the mean step (1 = even)."""
    judge, rng = load(), np.random.default_rng(SEED + 1)
    a = rng.integers(0, CLASSES, pairs)
    b = (a + rng.integers(1, CLASSES, pairs)) % CLASSES
    z = np.repeat(rng.standard_normal((pairs, latent)).astype(np.float32), steps, 0)
    t = np.tile(np.linspace(0, 1, steps, dtype=np.float32), pairs)[:, None]
    eye = np.eye(CLASSES, dtype=np.float32)
    weights = (1 - t) * np.repeat(eye[a], steps, 0) + t * np.repeat(eye[b], steps, 0)
    frames = np.concatenate([blend(z[i:i + 450], weights[i:i + 450]) for i in range(0, len(z), 450)])
    judged = _predict(judge, frames).argmax(1).reshape(pairs, steps)
    frames = frames.reshape(pairs, steps, -1)
    clean, jumps = 0, []
    for k in range(pairs):
        seq, first_b = judged[k], np.flatnonzero(judged[k] == b[k])
        clean += bool(seq[0] == a[k] and seq[-1] == b[k] and (seq[first_b[0]:] == b[k]).all())
        step = np.linalg.norm(np.diff(frames[k], axis=0), axis=1)
        jumps.append(step.max() / max(step.mean(), 1e-9))
    return {"morph_clean": round(clean / pairs, 4), "morph_jump": round(float(np.median(jumps)), 3),
            "morph_pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    judge, accuracy = train()
    print(f"held-out accuracy {accuracy:.4f} (needs {MIN_HELD_OUT_ACCURACY})", flush=True)
    if accuracy < MIN_HELD_OUT_ACCURACY:
        raise SystemExit("the judge is not good enough to judge; nothing written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(judge.state_dict(), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"held_out_accuracy": round(accuracy, 4), "train": 4000, "held_out": 1000, "seed": SEED}, indent=2) + "\n")


if __name__ == "__main__":
    main()
