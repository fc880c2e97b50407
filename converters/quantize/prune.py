"""Structured channel pruning of an ONNX graph: fewer filters, a smaller and faster graph.

``convert --prune RATIO`` runs this on the optimized fp32 graph, before quantization. A
*producer* (a convolution, or a dense MatMul/Gemm with constant weights) whose output
reaches exactly one convolution, the *consumer*, through channel-wise ops only
(activations, a transpose, a spatial slice, per-channel scale and shift, batch norm, and
for a dense layer one Reshape that splits its features into positions × channels, as a
DCGAN's first layer does) loses ``RATIO`` of its output channels, those with the smallest
L1 norm, and the consumer loses the matching input channels (so does every per-channel
constant between). The graph shrinks; nothing is zeroed. Shapes stay consistent because
the last convolution of every chain keeps its outputs.

Given calibration feeds, the consumer is then *reconstructed*: each removed channel's
activation is regressed (ridge least squares, over every position of every sample) on the
kept channels' activations in the unpruned model, and the consumer's weights for the kept
channels absorb the removed ones' through those coefficients. A convolution is linear in
its input channels, so this is the best linear stand-in for what was removed (the
least-squares step of He et al., "Channel Pruning for Accelerating Very Deep Neural
Networks", 2017), without training. The gate then grades the pruned model against the
unpruned fp32 one, on other seeds than these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edge_aigc.errors import ConversionError

__all__ = ["prune_channels", "PruneReport", "RECONSTRUCTION_SAMPLES"]

CONVS = ("Conv", "ConvTranspose")
DENSE = ("MatMul", "Gemm")
UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "Softplus", "Identity")
BINARY = ("Add", "Sub", "Mul", "Div")
# Feeds for the reconstruction; rows = samples × positions, so even a 7×7 layer of 256
# channels gets ~50 rows per coefficient.
RECONSTRUCTION_SAMPLES = 256
RIDGE = 1e-6  # times the mean activation energy: only for near-collinear channels' sake


@dataclass
class PruneReport:
    ratio: float
    layers: list[dict] = field(default_factory=list)   # {"layer", "channels", "kept"[, "reconstructed_r2"]}
    params_before: int = 0
    params_after: int = 0
    reconstructed: bool = False

    def summary(self) -> str:
        pruned = ", ".join(f"{p['layer']} {p['channels']}→{p['kept']}" for p in self.layers)
        how = "; consumers reconstructed by least squares" if self.reconstructed else ""
        return (f"{len(self.layers)} layer(s) pruned ({pruned}); parameters {self.params_before:,} → "
                f"{self.params_after:,}{how}")

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "layers": self.layers, "params_before": self.params_before,
                "params_after": self.params_after, "reconstructed": self.reconstructed}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class _Step:
    node: onnx.NodeProto
    index: int        # the input holding the constant to slice
    dim: int          # its axis that runs along the channels (or the features)
    features: bool    # before the Reshape: indexed by feature, not by channel


@dataclass
class _Chain:
    consumer: onnx.NodeProto
    channels: int
    steps: list[_Step]
    split: tuple[tuple[int, ...], int] | None = None  # a dense layer's (feature dims, channel dim)

    def feature_index(self, keep: np.ndarray) -> np.ndarray:
        """The producer's output features that belong to the channels in ``keep``."""
        if self.split is None:
            return keep
        dims, j = self.split
        channel_of = np.unravel_index(np.arange(int(np.prod(dims))), dims)[j]
        return np.flatnonzero(np.isin(channel_of, keep))

    def channel_norms(self, feature_norms: np.ndarray) -> np.ndarray:
        if self.split is None:
            return feature_norms
        dims, j = self.split
        channel_of = np.unravel_index(np.arange(feature_norms.size), dims)[j]
        return np.bincount(channel_of, weights=feature_norms, minlength=dims[j])


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.g = model.graph
        self.init = {t.name: t for t in self.g.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.g.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.g.output}
        inferred = onnx.shape_inference.infer_shapes(model).graph
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                       for v in [*inferred.value_info, *inferred.input, *inferred.output]
                       if v.type.tensor_type.HasField("shape")}
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


def _walk(graph: _Graph, tensor: str, axis: int, rank: int, channels: int, steps: list[_Step],
          features: bool, split=None) -> _Chain | None:
    """Follow channel-wise ops from ``tensor`` (channels on ``axis``) to the one convolution
    that reads it."""
    while True:
        users = graph.consumers.get(tensor, [])
        if len(users) != 1 or tensor in graph.outputs:
            return None
        node = users[0]
        if node.op_type in CONVS:
            if axis != 1 or node.input[0] != tensor or _attr(node, "group", 1) != 1 or node.input[1] not in graph.init:
                return None
            return _Chain(node, channels, steps, split)
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
                steps = [*steps, _Step(node, other[0], dim, features)]
            elif dim >= 0 and value.shape[dim] != 1:
                return None
        elif node.op_type == "BatchNormalization" and axis == 1:
            steps = [*steps, *(_Step(node, i, 0, features) for i in range(1, 5))]
        elif node.op_type == "Reshape" and features and split is None:
            return _split(graph, node, axis, rank, channels, steps)
        else:
            return None
        tensor = node.output[0]


def _split(graph: _Graph, node: onnx.NodeProto, axis: int, rank: int, features: int,
           steps: list[_Step]) -> _Chain | None:
    """A Reshape of [batch…, F] into [batch…, d1, …, dk] with F = d1·…·dk: one of the d's is
    the channel axis, the one whose chain ends at a convolution's channels."""
    target = graph.array(node.input[1])
    if target is None or axis != rank - 1 or len(target) <= rank:
        return None
    dims = tuple(int(d) for d in target[rank - 1:])
    if any(d <= 0 for d in dims) or int(np.prod(dims)) != features:
        return None
    for j, channels in enumerate(dims):
        steps_after = [*steps, _Step(node, 1, 0, False)]  # the target shape itself: special-cased
        found = _walk(graph, node.output[0], rank - 1 + j, len(target), channels, steps_after, False,
                      split=(dims, j))
        if found is not None:
            return found
    return None


def _producer(graph: _Graph, node: onnx.NodeProto):
    """(weight input index, output axis of that weight, output rank) for a prunable layer, or None."""
    if len(node.input) < 2 or node.input[1] not in graph.init:
        return None
    weight = graph.init[node.input[1]]
    if node.op_type in CONVS and _attr(node, "group", 1) == 1:
        return 1, 0 if node.op_type == "Conv" else 1, len(weight.dims)
    rank = len(graph.shapes.get(node.output[0]) or [])
    if node.op_type == "MatMul" and len(weight.dims) == 2 and rank >= 2:
        return 1, 1, rank
    if (node.op_type == "Gemm" and len(weight.dims) == 2 and not _attr(node, "transA", 0)
            and _attr(node, "alpha", 1.0) == 1.0):
        return 1, 0 if _attr(node, "transB", 0) else 1, 2
    return None


def _activations(model: onnx.ModelProto, names: list[str], feeds: list[dict]) -> dict[str, np.ndarray]:
    """The tensors ``names`` of the unpruned model over ``feeds``: [rows, channels] each, one
    row per sample and position (channels on axis 1, as a convolution reads them)."""
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    del probe.graph.value_info[:]  # shapes recorded before pruning
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # the pruned initializers left behind are dropped at the end
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            rows[name].append(np.moveaxis(value, 1, -1).reshape(-1, value.shape[1]))
    return {n: np.concatenate(r) for n, r in rows.items()}


def _select(x: np.ndarray, weight: np.ndarray, in_axis: int, keep_n: int) -> np.ndarray:
    """The ``keep_n`` channels to keep, by backward elimination: remove, one at a time, the
    channel whose loss costs the consumer least once the others stand in for it, i.e. its
    residual energy after regression on the rest (1 / (G⁻¹)_rr of the Gram matrix) times
    the energy of its consumer weights."""
    gram = x.T.astype(np.float64) @ x.astype(np.float64)
    gram[np.diag_indices_from(gram)] += RIDGE * np.trace(gram) / len(gram)
    weight_energy = (np.moveaxis(weight, in_axis, 0).reshape(len(gram), -1).astype(np.float64) ** 2).sum(axis=1)
    alive = list(range(len(gram)))
    while len(alive) > keep_n:
        inverse = np.linalg.inv(gram[np.ix_(alive, alive)])
        cost = weight_energy[alive] / np.diag(inverse)
        alive.pop(int(np.argmin(cost)))
    return np.array(alive)


def _reconstruct(target: np.ndarray, kept: np.ndarray, weight: np.ndarray, in_axis: int) -> tuple[np.ndarray, float]:
    """The consumer's weights for the kept channels, fitted so that it sees what it saw in the
    unpruned model: every channel of ``target`` (the unpruned model's input to it) is regressed
    on ``kept`` (the pruned model's, upstream pruning included), and the weights follow the
    coefficients. Returns them and the share of ``target``'s energy explained (R²)."""
    kept, target = kept.astype(np.float64), target.astype(np.float64)
    gram = kept.T @ kept
    gram[np.diag_indices_from(gram)] += RIDGE * np.trace(gram) / len(gram)
    coef = np.linalg.solve(gram, kept.T @ target)                 # [kept, all channels]
    explained = 1.0 - float(((target - kept @ coef) ** 2).sum() / max((target ** 2).sum(), 1e-30))
    w = np.moveaxis(weight, in_axis, 0).astype(np.float64)
    w_new = np.tensordot(coef, w, axes=(1, 0))
    return np.moveaxis(w_new, 0, in_axis).astype(weight.dtype), explained


def _plans(graph: "_Graph", ratio: float) -> list[tuple]:
    """(producer, weight input, output axis, chain, channels kept) of every prunable layer."""
    plans = []
    for producer in list(graph.g.node):
        found = _producer(graph, producer)
        if found is None:
            continue
        index, out_axis, rank = found
        weight = graph.array(producer.input[index])
        axis = 1 if producer.op_type in CONVS else rank - 1
        chain = _walk(graph, producer.output[0], axis, rank, weight.shape[out_axis], [], producer.op_type in DENSE)
        if chain is None or (producer.op_type in DENSE and chain.split is None):
            continue  # a dense layer prunes only through its Reshape into channels
        keep_n = chain.channels - int(round(chain.channels * ratio))
        if 1 <= keep_n < chain.channels:
            plans.append((producer, index, out_axis, chain, keep_n))
    if not plans:
        raise ConversionError("--prune: no layer whose channels can be removed (pruning needs a convolution, or a "
                              "dense layer reshaped into channels, feeding a convolution through channel-wise ops only)")
    return plans


def _cut(graph: "_Graph", producer, index: int, out_axis: int, chain, keep: np.ndarray) -> None:
    """Remove the channels not in ``keep`` from the producer and every step to its consumer."""
    hint = producer.name or producer.op_type
    features = chain.feature_index(keep)
    graph.replace_input(producer, index, np.take(graph.array(producer.input[index]), features, axis=out_axis), hint)
    if producer.op_type in CONVS and len(producer.input) > 2 and producer.input[2]:
        graph.replace_input(producer, 2, graph.array(producer.input[2])[keep], hint)
    if producer.op_type == "Gemm" and len(producer.input) > 2 and producer.input[2]:
        bias = graph.array(producer.input[2])  # broadcast to [M, N]: N runs along its last axis
        if bias.ndim and bias.shape[-1] > 1:
            graph.replace_input(producer, 2, np.take(bias, features, axis=-1), hint)
    for step in chain.steps:
        value = graph.array(step.node.input[step.index])
        if step.node.op_type == "Reshape":  # the split's channel dim shrinks
            dims, j = chain.split
            value = value.copy()
            value[len(value) - len(dims) + j] = len(keep)
        else:
            value = np.take(value, features if step.features else keep, axis=step.dim)
        graph.replace_input(step.node, step.index, value, step.node.name or step.node.op_type)


def _keep(graph: "_Graph", plan: tuple, seen: dict | None) -> np.ndarray:
    """The channels to keep: those the consumer needs most on real activations (``seen``), else
    the largest by weight norm."""
    producer, index, out_axis, chain, keep_n = plan
    consumer, in_axis = chain.consumer, 1 if chain.consumer.op_type == "Conv" else 0
    if seen:
        return _select(seen[consumer.input[0]], graph.array(consumer.input[1]), in_axis, keep_n)
    weight = graph.array(producer.input[index])
    feature_norms = np.abs(np.moveaxis(weight, out_axis, 0)).reshape(weight.shape[out_axis], -1).sum(axis=1)
    return np.sort(np.argsort(-chain.channel_norms(feature_norms), kind="stable")[:keep_n])


def _drop_unused(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.value_info[:]  # stale shapes of the pruned tensors


def prune_channels(model: onnx.ModelProto, ratio: float,
                   feeds: list[dict[str, np.ndarray]] | None = None) -> tuple[onnx.ModelProto, PruneReport]:
    """Prune ``ratio`` of the channels of every prunable layer; with ``feeds``, reconstruct
    each consumer from the unpruned model's activations. Returns the new model."""
    if not 0 < ratio < 1:
        raise ConversionError(f"--prune must be a ratio in (0, 1), got {ratio}")
    original = model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = _Graph(model)
    report = PruneReport(ratio, params_before=sum(int(np.prod(t.dims)) for t in graph.g.initializer))
    plans = _plans(graph, ratio)
    seen = _activations(original, [c.consumer.input[0] for *_, c, _ in plans], feeds) if feeds else {}
    for plan in plans:
        producer, index, out_axis, chain, _ = plan
        consumer, in_axis = chain.consumer, 1 if chain.consumer.op_type == "Conv" else 0
        keep = _keep(graph, plan, seen)
        _cut(graph, producer, index, out_axis, chain, keep)
        weight = graph.array(consumer.input[1])
        graph.replace_input(consumer, 1, np.take(weight, keep, axis=in_axis), consumer.name or "conv")
        layer = {"layer": producer.name or producer.output[0], "channels": chain.channels, "kept": len(keep)}
        if feeds:  # what the consumer now reads, every pruning upstream included
            kept_in = _activations(model, [consumer.input[0]], feeds)[consumer.input[0]]
            new_weight, explained = _reconstruct(seen[consumer.input[0]], kept_in, weight, in_axis)
            graph.replace_input(consumer, 1, new_weight, consumer.name or "conv")
            layer["reconstructed_r2"] = round(explained, 4)
        report.layers.append(layer)
    report.reconstructed = bool(feeds)
    _drop_unused(model)
    report.params_after = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    onnx.checker.check_model(model)
    return model, report
