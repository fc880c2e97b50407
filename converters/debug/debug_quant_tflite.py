"""debug-quant for TFLite bundles: every tensor against fp32, by ai-edge-quantizer's validator.

Both models run the gate's inputs through ``ai_edge_quantizer.model_validator.compare_model``
with LiteRT's reference kernels (XNNPACK off, so that every intermediate tensor is kept),
which matches tensors by name: ai-edge-quantizer, which made the fp16/int8-dynamic/int4
models from the fp32 one, keeps them. Its SNR (a power ratio, averaged over the inputs)
is reported in dB.

A TFLite graph cannot be cut into one-op pieces as an ONNX graph can, so what a weighted op
adds by itself is estimated from the SNR of the data it reads and of what it writes
(``debug_quant._added``). The ops that add the most are the suggested ``--keep-float`` set,
named by their output tensor, as ``convert --format tflite --keep-float`` takes them.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_aigc.errors import ConversionError

__all__ = ["compare_tflite", "WEIGHTED_TFLITE"]

# the weighted ops, and which input carries their data (TRANSPOSE_CONV: output shape, weights,
# data; EMBEDDING_LOOKUP: ids, table)
WEIGHTED_TFLITE = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "CONV_3D": 0,
                   "BATCH_MATMUL": 0, "TRANSPOSE_CONV": 2, "EMBEDDING_LOOKUP": 0}
_CAP_DB = 200.0  # the validator's epsilon makes identical tensors a large finite ratio


def weighted_ops(model: bytes, subgraph: int = 0) -> list[tuple[int, str, str, str]]:
    """(index, op type, output tensor, data input tensor) of each weighted op, in graph order."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    flat = fb.read_model(model)
    graph = flat.subgraphs[subgraph]
    ops = []
    for index, op in enumerate(graph.operators):
        kind = _builtin_name(flat, op)
        data = WEIGHTED_TFLITE.get(kind)
        if data is None or data >= len(op.inputs) or op.inputs[data] < 0:
            continue
        ops.append((index, kind, fb.get_tensor_name(graph.tensors[op.outputs[0]]),
                    fb.get_tensor_name(graph.tensors[op.inputs[data]])))
    return ops


def _builtin_name(flat, op) -> str:
    from ai_edge_litert import schema_py_generated as schema

    code = flat.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return next((k for k, v in vars(schema.BuiltinOperator).items() if v == builtin), str(builtin))


def _signature(model: bytes, feeds: list[dict[str, np.ndarray]]) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The signature whose inputs have the feeds' shapes, and the feeds in its dtypes."""
    from ai_edge_quantizer.utils import tfl_interpreter_utils as iu

    interpreter = iu.create_tfl_interpreter(model, use_xnnpack=False, num_threads=1, preserve_all_tensors=False)
    for key in interpreter.get_signature_list():
        details = interpreter.get_signature_runner(key).get_input_details()
        if set(details) == set(feeds[0]) and all(tuple(details[k]["shape"]) == v.shape for k, v in feeds[0].items()):
            return key, [{k: v.astype(details[k]["dtype"]) for k, v in f.items()} for f in feeds]
    shapes = ", ".join(f"{k} {v.shape}" for k, v in feeds[0].items())
    raise ConversionError(f"no signature of the TFLite model takes the gate's inputs ({shapes})")


def compare_tflite(fp32_path: Path, quant_path: Path, feeds: list[dict[str, np.ndarray]],
                   threads: int) -> list[tuple[int, str, str, float, float]]:
    """(index, op type, output tensor, SNR dB of its output, SNR dB of its data input) for
    every weighted op of the fp32 model found by name in the quantized one."""
    from ai_edge_quantizer import model_validator
    from ai_edge_quantizer.utils import tfl_interpreter_utils as iu
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric

    ref, cand = fp32_path.read_bytes(), quant_path.read_bytes()
    key, data = _signature(ref, feeds)
    result = model_validator.compare_model(ref, cand, {key: data}, [ValidationErrorMetric.SNR],
                                           use_xnnpack=False, num_threads=threads)
    per_tensor = result.get_all_tensor_results()
    subgraph = iu.get_signature_main_subgraph_index(iu.create_tfl_interpreter(ref, preserve_all_tensors=False), key)
    inputs = set(data[0])

    def db(name: str) -> float:
        if name in inputs:  # the signature's own input: fed identically to both
            return math.inf
        ratio = per_tensor.get(name, {}).get("snr")
        return math.nan if ratio is None else min(_CAP_DB, 10 * math.log10(max(ratio, 1e-30)))

    rows = [(index, kind, out, db(out), db(src)) for index, kind, out, src in weighted_ops(ref, subgraph)]
    rows = [r for r in rows if not math.isnan(r[3])]
    if not rows:
        raise ConversionError("no weighted op of the fp32 TFLite model is found by name in the quantized one "
                              "(int8-static goes through PT2E, which names its tensors anew)")
    return rows
