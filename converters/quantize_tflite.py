"""TFLite recipes: the same names as the ONNX path, mapped to litert-torch quantization.

| recipe | how | what changes |
|---|---|---|
| fp32 | no quantization | — |
| fp16 | ai-edge-quantizer float casting (``full_fp16_recipe``) | weights fp16, compute fp32 |
| int8-dynamic | ai-edge-quantizer dynamic range (``full_dynamic_recipe``) | int8 weights per channel, activations quantized on the fly |
| int8-static | PT2E: ``prepare_pt2e`` → calibrate → ``convert_pt2e`` | int8 weights and activations (model inputs may become int8: the backend quantizes them) |
| int4 | ai-edge-quantizer dynamic range, 4-bit, blockwise 32 | int4 weights; every quantized dim must divide by 32 |

ai-edge-quantizer's static recipes reject transposed convolutions and LeakyReLU, which
every DCGAN-style generator has, so int8-static goes through PT2E instead.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from edge_aigc.errors import ConversionError

__all__ = ["TFLITE_RECIPES", "quant_config", "calibrate_static"]

TFLITE_RECIPES = ("fp32", "fp16", "int8-dynamic", "int8-static", "int4")
INT4_BLOCK = 32


def _pt2e_quantizer():
    from litert_torch.quantize import pt2e_quantizer as pq

    config = pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    return pq.PT2EQuantizer().set_global(config)


def quant_config(recipe: str, quantizer=None):
    """litert-torch's ``QuantConfig`` for a recipe (None for fp32). int8-static passes the
    PT2E quantizer its model was calibrated with."""
    from litert_torch.generative.quantize import quant_attrs, quant_recipes
    from litert_torch.quantize.quant_config import QuantConfig

    if recipe == "fp32":
        return None
    if recipe == "fp16":
        return quant_recipes.full_fp16_recipe()
    if recipe == "int8-dynamic":
        return quant_recipes.full_dynamic_recipe()
    if recipe == "int4":
        return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4,
                                                 granularity=quant_attrs.Granularity.BLOCKWISE_32)
    if recipe == "int8-static":
        return QuantConfig(pt2e_quantizer=quantizer)
    raise ConversionError(f"unknown TFLite recipe {recipe!r}; choose one of {', '.join(TFLITE_RECIPES)}")


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
