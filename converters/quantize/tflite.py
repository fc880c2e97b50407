"""TFLite recipes: the same names as the ONNX path, mapped to LiteRT quantization.

| recipe | how | what changes |
|---|---|---|
| fp32 | no quantization | — |
| fp16 | ai-edge-quantizer float casting (litert-torch's ``full_fp16_recipe``) | weights fp16, compute fp32 |
| int8-dynamic | ai-edge-quantizer dynamic range (``full_dynamic_recipe``) | int8 weights per channel, activations quantized on the fly |
| int8-static | PT2E: ``prepare_pt2e`` → calibrate → ``convert_pt2e`` | int8 weights and activations of Conv/Linear (model inputs may become int8: the backend quantizes them) |
| int4 | ai-edge-quantizer dynamic range, 4-bit, blockwise 32 | int4 weights; every quantized dim must divide by 32 |

fp16, int8-dynamic and int4 run after conversion on the fp32 ``.tflite``, as litert-torch
does with those recipes, plus one rule of ours: ops written straight in a generator's
``forward`` — not in an ``nn`` layer — stay float. Their constant tensors are fixed kernels
(the tone model's linear-interpolation filter), not learned weights, and quantizing one
changes what the model computes (measured: the tone model's timbre distance went from
0.03x to 0.55x a plain sine's). ai-edge-quantizer's static recipes reject transposed
convolutions and LeakyReLU, which every DCGAN-style generator has, so int8-static goes
through PT2E instead.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from edge_aigc.errors import ConversionError

__all__ = ["POST_CONVERSION", "quantize_weights", "static_quant_config",
           "calibrate_static", "INT4_BLOCK"]

POST_CONVERSION = ("fp16", "int8-dynamic", "int4")
INT4_BLOCK = 32
# ai-edge-quantizer's scope of an op: its output tensor names, each followed by ";". Ops
# directly in the wrapped module's forward output "<wrapper>/<Model>_inner;N"; ops of nn
# layers carry the layer's path after that (".../torch.nn.modules.conv.Conv1d_pre;1").
KEEP_FLOAT_SCOPES = r"KeywordInputs/[^/;]+;\d+;$"


def _base_recipe(recipe: str):
    from litert_torch.generative.quantize import quant_attrs, quant_recipes

    if recipe == "fp16":
        return quant_recipes.full_fp16_recipe()
    if recipe == "int8-dynamic":
        return quant_recipes.full_dynamic_recipe()
    if recipe == "int4":
        return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4,
                                                 granularity=quant_attrs.Granularity.BLOCKWISE_32)
    raise ConversionError(f"{recipe!r} is not a post-conversion TFLite recipe ({', '.join(POST_CONVERSION)})")


def quantize_weights(recipe: str, model: bytes, keep_float: tuple[str, ...] = ()) -> bytes:
    """fp16 / int8-dynamic / int4 over a converted fp32 model (ai-edge-quantizer); the ops
    writing the tensors named in ``keep_float`` stay float (debug-quant suggests them)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    from litert_torch.quantize.translate_recipe import translate_to_ai_edge_recipe

    from .keep_float import check_keep_float_tflite, keep_float_regex

    check_keep_float_tflite(model, keep_float)
    qt = quantizer.Quantizer(model, translate_to_ai_edge_recipe(_base_recipe(recipe).generative_recipe))
    for scope in (KEEP_FLOAT_SCOPES, *map(keep_float_regex, keep_float)):  # later scopes win
        qt.update_quantization_recipe(scope, qtyping.TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return bytes(qt.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)


def static_quant_config(quantizer):
    """litert-torch's QuantConfig for a module calibrated by :func:`calibrate_static`."""
    from litert_torch.quantize.quant_config import QuantConfig

    return QuantConfig(pt2e_quantizer=quantizer)


def _pt2e_quantizer():
    from litert_torch.quantize import pt2e_quantizer as pq

    config = pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    return pq.PT2EQuantizer().set_global(config)


def calibrate_static(module, example: tuple, dynamic_shapes: tuple | None, names: list[str],
                     feeds: Callable[[], Iterator[dict[str, np.ndarray]]]):
    """PT2E static int8: observe ``module`` (called positionally with ``names``) on the
    calibration feeds; returns (the quantized module to convert, the quantizer for its QuantConfig)."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = _pt2e_quantizer()
    exported = torch.export.export(module, example, dynamic_shapes=dynamic_shapes).module()
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    count = 0
    with torch.no_grad():
        for feed in feeds():
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
            # the sampler speaks the ONNX model's int64; the TFLite module takes int32
            prepared(*[t.to(torch.int32) if t.dtype == torch.int64 else t for t in map(tensors.get, names)])
            count += 1
    if count == 0:
        raise ConversionError("int8-static needs calibration data and the sampler gave none")
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(quantized)
    return quantized, quantizer
