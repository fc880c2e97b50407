"""Export step: a source to an fp32 ONNX file, checked against PyTorch.

``torch.onnx.export(..., dynamo=True)`` at opset 18, one file (no external data: edge
models are far below protobuf's 2 GB limit). Generators get a dynamic batch axis (plus
whatever axes the factory declares); causal LMs go through :class:`KvCacheWrapper`.
After export the ONNX graph runs in onnxruntime on the example inputs and must agree
with PyTorch eager, or the step fails rather than ship a wrong model.
"""
from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_aigc.backends import open_session
from edge_aigc.contract import KV_INPUTS, KV_OUTPUTS
from edge_aigc.errors import ConversionError, SourceError

from . import kv_cache
from ..sources.types import Source, TorchGenerator

__all__ = ["ExportResult", "export_onnx", "OPSET"]

OPSET = 18
# Relative to the largest reference value: float32 graph rewrites move results by ~1e-6.
PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float | None  # vs PyTorch eager on the example inputs (None for ONNX sources)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def _quiet_exporter() -> None:
    # The exporter warns about every torchvision op it cannot register; none are ours.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def _generator_args(gen: TorchGenerator) -> tuple[list[str], tuple, tuple]:
    import torch

    names = list(gen.example_inputs)
    axes = gen.dynamic_axes if gen.dynamic_axes is not None else {n: {0: "batch"} for n in names}
    dims: dict[str, torch.export.Dim] = {}
    args, shapes = [], []
    for name in names:
        tensor = gen.example_inputs[name]
        spec = {}
        for axis, dim_name in axes.get(name, {}).items():
            if tensor.shape[axis] < 2:  # export specializes sizes 0 and 1: widen the example
                reps = [1] * tensor.dim()
                reps[axis] = 2
                tensor = tensor.repeat(*reps)
            spec[axis] = dims.setdefault(dim_name, torch.export.Dim(dim_name))
        args.append(tensor)
        shapes.append(spec or None)
    return names, tuple(args), tuple(shapes)


def _torch_outputs(module, args) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(*args)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in out]


def _parity(path: Path, names: list[str], args: tuple, expected: list[np.ndarray]) -> float:
    sess = open_session("onnx", path, None, "export parity")
    got = list(sess.run({n: a.numpy() for n, a in zip(names, args)}).values())
    if len(got) != len(expected):
        raise ConversionError(f"exported graph has {len(got)} outputs, PyTorch returned {len(expected)}")
    worst = 0.0
    for g, e in zip(got, expected):
        diff = float(np.max(np.abs(g.astype(np.float64) - e))) if e.size else 0.0
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        if diff > PARITY_TOLERANCE * scale:
            raise ConversionError(f"exported ONNX disagrees with PyTorch eager by {diff:.3g} "
                                  f"(tolerance {PARITY_TOLERANCE * scale:.3g}); not packaging it")
        worst = max(worst, diff)
    return worst


def _reason(exc: Exception) -> str:
    """The exporter's own one-line cause (its message opens with generic advice)."""
    lines = str(exc).splitlines()
    if "## Exception summary" in lines:
        i = lines.index("## Exception summary")
        summary = next((ln for ln in lines[i + 1:] if ln.strip()), "")
        return summary[:500]
    return f"{type(exc).__name__}: {lines[0][:500] if lines else ''}"


def export_onnx(source: Source, out: Path) -> ExportResult:
    """Write ``out`` (fp32 ONNX) from the source and check it against PyTorch."""
    if source.kind == "onnx":
        import onnx
        import onnxruntime as ort

        try:
            onnx.checker.check_model(str(source.onnx_path))
            sess = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx and onnxruntime raise many types for bad files
            raise SourceError(f"{source.onnx_path}: not a valid ONNX model: {exc}") from None
        shutil.copyfile(source.onnx_path, out)
        return ExportResult(out, None, tuple(i.name for i in sess.get_inputs()),
                            tuple(o.name for o in sess.get_outputs()))
    import torch

    _quiet_exporter()
    if source.lm is not None:
        module = kv_cache.KvCacheWrapper(source.lm_model, source.lm).eval()
        names = ["input_ids", "attention_mask", "position_ids", *kv_cache.cache_tensor_names(source.lm, KV_INPUTS)]
        outputs = ["logits", *kv_cache.cache_tensor_names(source.lm, KV_OUTPUTS)]
        args, shapes = kv_cache.example_inputs(source.lm), kv_cache.dynamic_shapes(source.lm)
    else:
        gen = source.generator
        module = gen.module.eval()
        names, args, shapes = _generator_args(gen)
        outputs = gen.output_names or ["output"]
    expected = _torch_outputs(module, args)
    try:
        with warnings.catch_warnings():  # axis-renaming chatter about dims we named ourselves
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(module, args, str(out), input_names=names, output_names=outputs,
                              dynamo=True, opset_version=OPSET, dynamic_shapes=shapes,
                              external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises a wide variety of errors
        raise ConversionError(f"torch.onnx.export failed for {source.ref}: {_reason(exc)}") from None
    return ExportResult(out, _parity(out, names, args, expected), tuple(names), tuple(outputs))
