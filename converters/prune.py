"""Structured channel pruning of an ONNX graph: fewer filters, a smaller and faster graph.

``convert --prune RATIO`` runs this on the optimized fp32 graph, before quantization. For
each convolution whose output reaches exactly one other convolution through channel-wise
ops only (activations, a transpose, a spatial slice, per-channel scale and shift, batch
norm), it removes ``RATIO`` of the first one's output channels, those with the smallest L1
norm, and the matching input channels of the second one (and of every per-channel constant
between). The graph shrinks; nothing is zeroed. Shapes in the graph stay consistent
because the last convolution of every chain keeps its outputs.

There is no fine-tuning: the gate grades the pruned model against the unpruned fp32 one,
and what it measures is what pruning costs (benchmarks/README.md has the figures).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edge_aigc.errors import ConversionError

__all__ = ["prune_channels", "PruneReport"]

CONVS = ("Conv", "ConvTranspose")
UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "Softplus", "Identity")
BINARY = ("Add", "Sub", "Mul", "Div")


@dataclass
class PruneReport:
    ratio: float
    layers: list[dict] = field(default_factory=list)   # {"layer", "channels", "kept"}
    params_before: int = 0
    params_after: int = 0

    def summary(self) -> str:
        pruned = ", ".join(f"{p['layer']} {p['channels']}→{p['kept']}" for p in self.layers)
        return (f"{len(self.layers)} layer(s) pruned ({pruned}); parameters {self.params_before:,} → "
                f"{self.params_after:,}")

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "layers": self.layers, "params_before": self.params_before,
                "params_after": self.params_after}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.g = model.graph
        self.init = {t.name: t for t in self.g.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.g.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.g.output}
        self._fresh = 0

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.init[name]) if name in self.init else None

    def replace_input(self, node: onnx.NodeProto, index: int, value: np.ndarray, hint: str) -> None:
        """Give ``node`` a new initializer of its own (the old one may be shared)."""
        self._fresh += 1
        name = f"{hint}_pruned_{self._fresh}"
        self.g.initializer.append(numpy_helper.from_array(value.astype(self.array(node.input[index]).dtype), name))
        self.init[name] = self.g.initializer[-1]
        node.input[index] = name


def _chain(graph: _Graph, producer: onnx.NodeProto, channels: int):
    """The channel-wise ops from ``producer``'s output to the one convolution that reads it:
    (consumer, [(node, input index or None, axis of the constant)]), or None."""
    rank = len(graph.init[producer.input[1]].dims)
    tensor, axis, steps = producer.output[0], 1, []
    while True:
        users = graph.consumers.get(tensor, [])
        if len(users) != 1 or tensor in graph.outputs:
            return None
        node = users[0]
        if node.op_type in CONVS:
            if axis != 1 or node.input[0] != tensor or _attr(node, "group", 1) != 1 or node.input[1] not in graph.init:
                return None
            return node, steps
        if node.op_type in UNARY:
            pass
        elif node.op_type == "Transpose":
            perm = list(_attr(node, "perm", list(reversed(range(rank)))))
            axis = perm.index(axis)
        elif node.op_type == "Slice":
            axes = graph.array(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(rank)
            if axes is None or any(int(a) % rank == axis for a in axes):
                return None
        elif node.op_type in BINARY or node.op_type == "PRelu":
            other = [i for i, name in enumerate(node.input) if name != tensor]
            if len(other) != 1 or (value := graph.array(node.input[other[0]])) is None:
                return None
            dim = axis - (rank - value.ndim)
            if dim >= 0 and value.shape[dim] == channels:
                steps.append((node, other[0], dim))
            elif dim >= 0 and value.shape[dim] != 1:
                return None
        elif node.op_type == "BatchNormalization" and axis == 1:
            steps += [(node, i, 0) for i in range(1, 5)]
        else:
            return None
        tensor = node.output[0]


def prune_channels(model: onnx.ModelProto, ratio: float) -> tuple[onnx.ModelProto, PruneReport]:
    """Prune ``ratio`` of the channels of every prunable convolution; returns the new model."""
    if not 0 < ratio < 1:
        raise ConversionError(f"--prune must be a ratio in (0, 1), got {ratio}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = _Graph(model)
    report = PruneReport(ratio, params_before=sum(int(np.prod(t.dims)) for t in graph.g.initializer))
    for producer in [n for n in graph.g.node if n.op_type in CONVS]:
        weight = graph.array(producer.input[1]) if len(producer.input) > 1 else None
        if weight is None or _attr(producer, "group", 1) != 1:
            continue
        out_axis = 0 if producer.op_type == "Conv" else 1
        channels = weight.shape[out_axis]
        found = _chain(graph, producer, channels)
        keep_n = channels - int(round(channels * ratio))
        if found is None or keep_n < 1 or keep_n == channels:
            continue
        consumer, steps = found
        norms = np.abs(np.moveaxis(weight, out_axis, 0)).reshape(channels, -1).sum(axis=1)
        keep = np.sort(np.argsort(-norms, kind="stable")[:keep_n])
        graph.replace_input(producer, 1, np.take(weight, keep, axis=out_axis), producer.name or "conv")
        if len(producer.input) > 2 and producer.input[2]:
            graph.replace_input(producer, 2, graph.array(producer.input[2])[keep], producer.name or "conv")
        for node, index, dim in steps:
            graph.replace_input(node, index, np.take(graph.array(node.input[index]), keep, axis=dim),
                                node.name or node.op_type)
        in_axis = 1 if consumer.op_type == "Conv" else 0
        graph.replace_input(consumer, 1, np.take(graph.array(consumer.input[1]), keep, axis=in_axis),
                            consumer.name or "conv")
        report.layers.append({"layer": producer.name or producer.output[0], "channels": channels, "kept": keep_n})
        graph = _Graph(model)  # the consumers' inputs changed names
    if not report.layers:
        raise ConversionError("--prune: no convolution whose channels can be removed (pruning needs a "
                              "convolution feeding another through channel-wise ops only)")
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.value_info[:]  # stale shapes of the pruned tensors
    report.params_after = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    onnx.checker.check_model(model)
    return model, report
