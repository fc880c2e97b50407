"""Export step, TFLite format: a PyTorch source to a quantized ``.tflite`` with litert-torch.

LiteRT does not take dynamic shapes (litert-torch's lowering fails on them and baked shapes
cannot be resized), so every dynamic dim is exported at fixed sizes, one signature per
combination, with the weights stored once:

- generators: ``batch_1``, ``batch_8`` (``TorchGenerator.tflite_sizes`` adds or changes
  sizes, e.g. ``{"batch": [1], "frames": [200, 800, 3000]}`` for an audio model);
- causal LMs: ``prefill_16``, ``prefill_64`` and ``decode`` over a fixed KV cache
  (:mod:`converters.export.tflite_lm`).

Signature inputs and outputs keep the source's names (a keyword wrapper passes them
through); 64-bit integer inputs become int32, as LiteRT stores them. Quantization happens
in the same conversion (:mod:`converters.quantize.tflite`). The fidelity gate then grades
the artifact through the device's own LiteRT backend against the fp32 ONNX reference.
"""
from __future__ import annotations

import io
import itertools
import logging
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edge_aigc.errors import ConversionError

from .onnx import _reason
from ..quantize.tflite import INT4_BLOCK, POST_CONVERSION, calibrate_static, quantize_weights, static_quant_config
from ..sources.types import Source, TorchGenerator
from .tflite_lm import lm_signatures

__all__ = ["export_tflite", "DEFAULT_BATCH_SIZES"]

DEFAULT_BATCH_SIZES = [1, 8]   # the image task runs up to 8 images per call


def _keyword_module(module, names: list[str], outputs: list[str]):
    import torch

    class KeywordInputs(torch.nn.Module):
        """Calls ``module`` positionally from keyword inputs and names its outputs."""

        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, **feeds):
            out = self.inner(*[feeds[n] for n in names])
            return dict(zip(outputs, out if isinstance(out, (tuple, list)) else (out,)))

    return KeywordInputs()  # no .eval(): PT2E-quantized modules refuse it (already in eval mode)


def _resize(tensor, axis: int, size: int):
    import torch

    return tensor.index_select(axis, torch.arange(size) % tensor.shape[axis])


def _generator_plan(gen: TorchGenerator):
    """(module, input names, output names, {signature: example kwargs}, positional dynamic shapes)."""
    import torch

    names = list(gen.example_inputs)
    axes = gen.dynamic_axes if gen.dynamic_axes is not None else {n: {0: "batch"} for n in names}
    sizes = {"batch": DEFAULT_BATCH_SIZES, **gen.tflite_sizes}
    dims = sorted({d for spec in axes.values() for d in spec.values()})
    missing = [d for d in dims if not sizes.get(d)]
    if missing:
        raise ConversionError(f"TFLite needs fixed sizes for the dynamic dim(s) {', '.join(missing)}: "
                              "set TorchGenerator.tflite_sizes, e.g. {" + f"'{missing[0]}': [256, 1024]" + "}")
    examples = {k: (v.to(torch.int32) if v.dtype == torch.int64 else v) for k, v in gen.example_inputs.items()}
    signatures = {}
    for combo in itertools.product(*(sorted(sizes[d]) for d in dims)):
        chosen = dict(zip(dims, combo))
        feeds = {}
        for name, tensor in examples.items():
            for axis, dim in axes.get(name, {}).items():
                tensor = _resize(tensor, axis, chosen[dim])
            feeds[name] = tensor
        signatures["_".join(f"{d}_{chosen[d]}" for d in dims) or "main"] = feeds
    # for int8-static calibration, which traces once over every exported size
    shared = {d: torch.export.Dim(d, min=1, max=max(sizes[d])) for d in dims if len(set(sizes[d])) > 1}
    dynamic = tuple({a: shared[d] for a, d in axes.get(n, {}).items() if d in shared} or None for n in names)
    return gen.module.eval(), names, gen.output_names or ["output"], signatures, dynamic


@contextmanager
def _quiet() -> Iterator[None]:
    import litert_torch

    litert_torch.config.show_progress = False   # our own progress lines say what runs
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)                 # "converted in training mode", x64 downcasts, …
    try:  # ai-edge-quantizer prints its size summary; the pipeline reports sizes itself
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_tflite(source: Source, recipe: str, out: Path,
                  calibration: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None,
                  keep_float: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``out`` for ``recipe``, leaving the ops that write the tensors ``keep_float`` in
    float; returns facts for the manifest (signatures, cache length)."""
    import litert_torch

    if keep_float and recipe == "int8-static":
        raise ConversionError("--keep-float on TFLite applies to fp16, int8-dynamic and int4 (ai-edge-quantizer); "
                              "int8-static is quantized by PT2E before conversion, where those names do not exist")

    if source.kind == "onnx":
        raise ConversionError("TFLite export needs a PyTorch or Keras source (a factory, a Hugging Face "
                              "directory, a .keras file); an ONNX file converts only to ONNX (--format onnx)")
    facts: dict[str, Any] = {}
    if source.lm is not None:
        module, length, signatures = lm_signatures(source.lm_model, source.lm)
        facts["kv_cache_length"] = length
    else:
        module, names, outputs, signatures, dynamic = _generator_plan(source.generator)
    facts["signatures"] = list(signatures)
    try:
        with _quiet():
            quantizer = None
            if recipe == "int8-static":
                if calibration is None or source.lm is not None:
                    raise ConversionError("int8-static TFLite export calibrates generators only; "
                                          "use int8-dynamic or int4 for language models")
                # trace at the largest shape: torch.export specializes dims it sees as 1
                largest = list(signatures.values())[-1]
                module, quantizer = calibrate_static(module, tuple(largest[n] for n in names), dynamic,
                                                     names, calibration)
            if source.lm is None:
                module = _keyword_module(module, names, outputs)
            converter = None
            for name, example in signatures.items():
                converter = (litert_torch.signature if converter is None else converter.signature)(
                    name, module, sample_kwargs=example)
            config = static_quant_config(quantizer) if quantizer is not None else None
            model = converter.convert(quant_config=config).model_content()
            if recipe in POST_CONVERSION:
                model = quantize_weights(recipe, model, keep_float)
            out.write_bytes(model)
    except ConversionError:
        raise
    except Exception as exc:  # torch.export, the lowering and the quantizer raise many types
        what = f"{source.lm.architecture} language model" if source.lm else "generator"
        hint = (f" (int4 quantizes in blocks of {INT4_BLOCK} along each weight's input dim; "
                "use int8-dynamic for this model)" if recipe == "int4" and "block size" in str(exc) else "")
        raise ConversionError(f"TFLite export ({recipe}) of the {what} {source.ref} failed: "
                              f"{_reason(exc)}{hint}") from None
    return facts
