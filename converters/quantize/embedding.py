"""Embedding step: int8 lookup tables for the Gathers that the weight quantizers leave in fp32.

ONNX Runtime's dynamic quantizer and onnxruntime-genai's builder at 8 bits
(``GatherBlockQuantized`` takes 4 bits only) keep token-embedding tables in fp32; in a
small LM that table is a third of the file or more (8192 x 512 floats = 16 MB of the 26M
Llama's 100 MB). This step stores each large float table that only Gathers read as int8
with one symmetric scale per row and rewrites

    Gather(table, ids)  →  Mul(Cast(Gather(table_q, ids), float), Gather(scales, ids))

so a lookup dequantizes just the rows it reads. Error per element ≤ half a step of its
row's scale (max |row| / 127), far below what the int8 MatMuls already add.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["quantize_embeddings", "MIN_ELEMENTS"]

MIN_ELEMENTS = 4096  # smaller tables are not worth four nodes


def _readers(graph) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def quantize_embeddings(src: Path, dst: Path, keep_float: tuple[str, ...] = ()) -> int:
    """Rewrite ``src`` into ``dst``; returns how many tables became int8. A table that a
    Gather named in ``keep_float`` reads stays float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers = _readers(graph)
    done = 0
    for name, tensor in list(inits.items()):
        users = readers.get(name, [])
        if (tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2 or not users
                or int(np.prod(tensor.dims)) < MIN_ELEMENTS
                or any(n.op_type != "Gather" or n.input[0] != name or n.name in keep_float or
                       any(a.name == "axis" and a.i != 0 for a in n.attribute) for n in users)):
            continue
        table = numpy_helper.to_array(tensor).astype(np.float32)
        scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
        q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(tensor)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")])
        for node in users:
            out, ids = node.output[0], node.input[1]
            base = node.name or out
            new = [helper.make_node("Gather", [f"{name}_int8", ids], [f"{base}/rows_q"], name=f"{base}/q"),
                   helper.make_node("Cast", [f"{base}/rows_q"], [f"{base}/rows"], to=TensorProto.FLOAT,
                                    name=f"{base}/cast"),
                   helper.make_node("Gather", [f"{name}_scale", ids], [f"{base}/row_scale"],
                                    name=f"{base}/scale"),
                   helper.make_node("Mul", [f"{base}/rows", f"{base}/row_scale"], [out], name=f"{base}/dq")]
            at = list(graph.node).index(node)
            graph.node.remove(node)
            for offset, n in enumerate(new):
                graph.node.insert(at + offset, n)
        done += 1
    onnx.save(model, str(dst))
    return done
