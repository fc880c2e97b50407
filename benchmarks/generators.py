"""Image and audio generators: our runtime per recipe and format vs PyTorch eager.

Image: images/s generating a batch of 8 (the image task's chunk) and latency of one image.
Audio: real-time factor (seconds of compute per second of audio) for a 4-second melody.
The zoo models' own factories give the PyTorch modules, so every system runs the same weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Report, threads, time_repeats

__all__ = ["bench_image", "bench_audio", "RECIPES"]

RECIPES = [("onnx", "fp32"), ("onnx", "int8-dynamic"), ("onnx", "int8-static"),
           ("tflite", "fp32"), ("tflite", "int8-dynamic"), ("tflite", "int8-static")]


def _bundle(factory: str, name: str, fmt: str, recipe: str, work: Path) -> Path | None:
    from converters import ConvertOptions, convert
    from edge_aigc.errors import ConversionError
    from edge_aigc.profiles import get_profile

    out = work / f"{name}-{fmt}-{recipe}.eaigc"
    if not out.is_file():
        try:
            convert(factory, [get_profile("rpi5")], out,
                    ConvertOptions(name=name, format=fmt, recipe=recipe, allow_degraded=True))
        except ConversionError as exc:
            print(f"  {name} {fmt} {recipe}: not built ({exc})")
            return None
    return out


def _sessions(factory: str, name: str, work: Path, progress):
    """(format, recipe, backend session) for each recipe of RECIPES that converts."""
    from edge_aigc import load_bundle
    from edge_aigc.backends import open_session

    for fmt, recipe in RECIPES:
        bundle = _bundle(factory, name, fmt, recipe, work)
        if bundle is None:
            continue
        progress(f"{name}: {fmt} {recipe} …")
        b = load_bundle(bundle)
        m = b.manifest
        yield fmt, recipe, open_session(m.format, b.file(m.task_config["model"]), None, m.name, threads=threads())


def bench_image(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    import torch

    from converters.zoo.image import factory

    torch.set_num_threads(threads())
    gen = factory()
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((8, gen.example_inputs["z"].shape[1])).astype(np.float32), np.arange(8) % 10
    module = gen.module.eval()

    def eager(n):
        with torch.no_grad():
            module(torch.from_numpy(z[:n]), torch.from_numpy(y[:n]))

    base8, base1 = time_repeats(lambda: eager(8), repeats).median, time_repeats(lambda: eager(1), repeats).median
    report = Report(f"Image — zoo digits generator, batch 8 and 1 (median of {repeats})",
                    ["system", "images/s (batch 8)", "vs eager", "ms per single image", "vs eager"])
    report.add("pytorch eager fp32", 8 / base8, "1.00x", base1 * 1e3, "1.00x")
    data = {"pytorch eager fp32": {"images_per_s": 8 / base8, "single_ms": base1 * 1e3}}
    for fmt, recipe, sess in _sessions("converters.zoo.image:factory", "digits", work, progress):
        t8 = time_repeats(lambda: sess.run({"z": z, "label": y}), repeats).median
        t1 = time_repeats(lambda: sess.run({"z": z[:1], "label": y[:1]}), repeats).median
        report.add(f"ours {fmt} {recipe}", 8 / t8, f"{base8 / t8:.2f}x", t1 * 1e3, f"{base1 / t1:.2f}x")
        data[f"ours {fmt} {recipe}"] = {"images_per_s": 8 / t8, "single_ms": t1 * 1e3}
    return report, data


def bench_audio(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    import torch

    from converters.zoo.audio import FRAME_RATE, factory
    from edge_aigc.tasks.notes import note_frames, parse_notes

    torch.set_num_threads(threads())
    gen = factory()
    f0, loud = note_frames(parse_notes("C4:1 E4:1 G4:1 C5:1"), FRAME_RATE)
    seconds = len(f0) / FRAME_RATE
    module = gen.module.eval()

    def eager():
        with torch.no_grad():
            module(torch.from_numpy(f0[None]), torch.from_numpy(loud[None]))

    base = time_repeats(eager, repeats).median
    report = Report(f"Audio — zoo tones generator, {seconds:.0f} s melody (median of {repeats})",
                    ["system", "real-time factor", "speed vs eager"])
    report.add("pytorch eager fp32", base / seconds, "1.00x")
    data = {"pytorch eager fp32": {"rtf": base / seconds}}
    for fmt, recipe, sess in _sessions("converters.zoo.audio:factory", "tones", work, progress):
        t = time_repeats(lambda: sess.run({"f0": f0[None], "loudness": loud[None]}), repeats).median
        report.add(f"ours {fmt} {recipe}", t / seconds, f"{base / t:.2f}x")
        data[f"ours {fmt} {recipe}"] = {"rtf": t / seconds}
    return report, data
