"""``--keep-float`` on the TFLite path: the names a user gives, checked against the fp32 model,
as ai-edge-quantizer's scope regexes. (The ONNX path checks its names in recipes.py.)

These lived in the debug tool, which suggests the names; the quantizer that honours them is
below it, so they live here and debug-quant imports nothing back.
"""
from __future__ import annotations

import re

from .recipes import require_known

__all__ = ["keep_float_regex", "check_keep_float_tflite"]


def keep_float_regex(name: str) -> str:
    """ai-edge-quantizer's scope regex for the op whose outputs include tensor ``name``
    (an op's scope is its output tensor names, each followed by ";")."""
    return f"(^|;){re.escape(name)};"


def check_keep_float_tflite(model: bytes, names: tuple[str, ...]) -> None:
    """Every ``--keep-float`` name is the output tensor of an op of the fp32 model."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    flat = fb.read_model(model)
    outputs = [fb.get_tensor_name(g.tensors[i]) for g in flat.subgraphs for op in g.operators for i in op.outputs]
    require_known(names, outputs, "no op of the fp32 TFLite model writes such a tensor",
                  "edge-aigc debug-quant lists the ops by their output tensor")
