"""Image and audio generators: our runtime per recipe and format vs the framework they came from.

Image: images/s generating a batch of 8 (the image task's chunk) and latency of one image,
for the zoo's Keras DCGAN: Keras eager on its torch backend, the same weights in plain
PyTorch, and our bundles, interleaved. Audio: real-time factor (seconds of compute per
second of audio) for a 4-second melody, PyTorch eager vs ours. Every system runs the same weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import Report, interleaved, threads, time_repeats

__all__ = ["bench_image", "bench_audio", "RECIPES"]

RECIPES = [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8-dynamic"), ("onnx", "int8-static"),
           ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8-dynamic"), ("tflite", "int8-static")]


def _bundle(factory: str, name: str, fmt: str, recipe: str, work: Path) -> Path | None:
    from converters import ConvertOptions, convert
    from edge_aigc.errors import ConversionError
    from edge_aigc.device.profiles import get_profile

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
        model = b.file(m.task_config["model"])
        yield fmt, recipe, open_session(m.format, model, None, m.name, threads=threads()), model.stat().st_size


def bench_image(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    """The zoo's Keras DCGAN: Keras eager (torch backend), the same weights in plain PyTorch,
    and our bundles per recipe; batches of 8 and of 1, interleaved."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import torch

    from converters.zoo.dcgan import MODEL, TorchDCGAN

    torch.set_num_threads(threads())
    model = keras.saving.load_model(MODEL, compile=False)
    port = TorchDCGAN(model).eval()
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((8, 100)).astype(np.float32), (np.arange(8) % 10).astype(np.int32)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)

    def keras_eager(n):
        with torch.no_grad():
            model([zt[:n], yt[:n]], training=False)

    def torch_eager(n):
        with torch.no_grad():
            port(zt[:n], yt[:n])

    systems = {"keras eager fp32 (torch backend)": keras_eager, "pytorch eager fp32": torch_eager}
    sizes = {}
    for fmt, recipe, sess, size in _sessions(str(MODEL), "digits", work, progress):
        systems[f"ours {fmt} {recipe}"] = (lambda s: lambda n: s.run({"z": z[:n], "label": y[:n]}))(sess)
        sizes[f"ours {fmt} {recipe}"] = size
    t8 = interleaved({k: (lambda f: lambda: f(8))(f) for k, f in systems.items()}, repeats)
    t1 = interleaved({k: (lambda f: lambda: f(1))(f) for k, f in systems.items()}, repeats)
    base8, base1 = t8["keras eager fp32 (torch backend)"].median, t1["keras eager fp32 (torch backend)"].median
    report = Report(f"Image — zoo digits (Keras DCGAN, 2.96 M parameters), batch 8 and 1 "
                    f"(medians of {repeats} interleaved rounds)",
                    ["system", "images/s (batch 8)", "vs keras", "ms per single image", "vs keras", "model MB"])
    data = {}
    for name in systems:
        a, b = t8[name].median, t1[name].median
        mb = f"{sizes[name] / 1e6:.1f}" if name in sizes else f"{MODEL.stat().st_size / 1e6:.1f} (.keras)"
        report.add(name, 8 / a, f"{base8 / a:.2f}x", b * 1e3, f"{base1 / b:.2f}x", mb)
        data[name] = {"images_per_s": 8 / a, "single_ms": b * 1e3, "model_bytes": sizes.get(name)}
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
    for fmt, recipe, sess, _ in _sessions("converters.zoo.audio:factory", "tones", work, progress):
        t = time_repeats(lambda: sess.run({"f0": f0[None], "loudness": loud[None]}), repeats).median
        report.add(f"ours {fmt} {recipe}", t / seconds, f"{base / t:.2f}x")
        data[f"ours {fmt} {recipe}"] = {"rtf": t / seconds}
    return report, data
