"""Pruning on the zoo's image generators: what ``convert --prune`` saves and what it costs.

For the DCGAN (digits) and the VAE (digits-vae), each ratio is converted at fp32 and at
int8-dynamic for x86-avx2 (``allow_degraded``, so that failing bundles are measured too) and
judged three ways: the gate's PSNR against the unpruned fp32 model, the zoo's MNIST judge
(class accuracy and Fréchet distance of 1,000 seeded samples), and speed (one image, and
batches of 64) with every bundle timed round by round, interleaved.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .common import Report, interleaved, threads

__all__ = ["bench_prune", "RATIOS"]

RATIOS = (0.0, 0.25, 0.5)
RECIPES = ("fp32", "int8-dynamic")


def _models() -> dict[str, tuple[str, Callable, int]]:
    """name → (source, how the judge calls a session: (session, z, labels) → images in [-1, 1],
    latent size)."""
    from converters.zoo import dcgan
    from converters.zoo.vae import LATENT

    def vae(session, z, y):
        return session.run({"latent": z, "label": np.eye(10, dtype=np.float32)[y]})["image"] * 2 - 1

    return {"digits": (str(dcgan.MODEL), lambda s, z, y: s.run({"z": z, "label": y})["image"], 100),
            "digits-vae": ("converters.zoo.vae:factory", vae, LATENT)}


def bench_prune(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    from converters import ConvertOptions, convert
    from converters.zoo.judge import bars
    from edge_aigc import Runtime
    from edge_aigc.device.profiles import get_profile

    work.mkdir(parents=True, exist_ok=True)
    profile, rows, timed = get_profile("x86-avx2"), {}, {}
    runtimes = []
    try:
        for name, (source, call, latent) in _models().items():
            for ratio in RATIOS:
                for recipe in RECIPES:
                    out = work / f"{name}-prune{int(ratio * 100)}-{recipe}.eaigc"
                    [r] = convert(source, [profile], out, ConvertOptions(
                        recipe=recipe, prune=ratio or None, allow_degraded=True))
                    rt = Runtime([out], profile, threads=threads())
                    runtimes.append(rt)
                    session = rt.model(rt.loaded()[0]).session
                    judged = bars(lambda z, y, s=session: call(s, z, y), latent=latent)
                    pruned = r.manifest.source.get("pruned", {})
                    rows[(name, ratio, recipe)] = {
                        "bytes": r.model_bytes, "params": pruned.get("params_after"),
                        "psnr_db": r.fidelity.metrics.get("psnr_db"), "gate": r.fidelity.passed,
                        "class_accuracy": judged["class_accuracy"], "frechet": judged["frechet"]}
                    rng = np.random.default_rng(0)
                    for batch in (1, 64):
                        z = rng.standard_normal((batch, latent)).astype(np.float32)
                        y = (np.arange(batch) % 10).astype(np.int32)
                        timed[(name, ratio, recipe, batch)] = lambda s=session, z=z, y=y, f=call: f(s, z, y)
                    progress(f"prune: {name} {ratio:.0%} {recipe} built and judged")
        start = time.perf_counter()
        timings = interleaved(timed, repeats)
        progress(f"prune: timed in {time.perf_counter() - start:.0f} s")
    finally:
        for rt in runtimes:
            rt.close()
    report = Report(f"Pruning the zoo's image generators — x86-avx2, {threads()} threads, median of {repeats}",
                    ["model", "pruned", "recipe", "params", "size MB", "PSNR vs fp32", "gate",
                     "judge accuracy", "Fréchet", "1 image ms", "batch 64 images/s"])
    data = {"repeats": repeats, "threads": threads(), "rows": []}
    for (name, ratio, recipe), row in rows.items():
        one = timings[(name, ratio, recipe, 1)].median * 1e3
        per_s = 64 / timings[(name, ratio, recipe, 64)].median
        report.add(name, f"{ratio:.0%}", recipe, row["params"] or "—", row["bytes"] / 1e6,
                   row["psnr_db"], "pass" if row["gate"] else "fail", row["class_accuracy"], row["frechet"],
                   one, per_s)
        data["rows"].append({"model": name, "ratio": ratio, "recipe": recipe, **row, "one_image_ms": one,
                             "batch64_per_s": per_s})
    report.notes.append("no training after pruning: the channels go by backward elimination on calibration "
                        "activations, each next layer is refitted by least squares (converters/quantize/prune.py), and "
                        "the gate grades the result against the unpruned fp32 model on other seeds")
    return report, data
