"""Structured channel pruning (converters/quantize/prune.py) on real ONNX graphs run by ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters import ConvertOptions, convert
from converters.quantize.prune import prune_channels
from edge_aigc import load_bundle
from edge_aigc.errors import ConversionError
from edge_aigc.device.profiles import get_profile


def chain(dead: list[int], channels: int = 8) -> onnx.ModelProto:
    """x [1,3,6,6] → ConvTranspose(3→C) → Slice (spatial) → Transpose to NHWC → per-channel
    scale and shift → LeakyRelu → Transpose back → Conv(C→2): the shape of the zoo's DCGAN.
    The filters in ``dead`` are zero, so removing them changes nothing."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((3, channels, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(channels).astype(np.float32)
    w1[:, dead], b1[dead] = 0.0, 0.0
    scale = rng.uniform(0.5, 2, channels).astype(np.float32)
    shift = rng.standard_normal(channels).astype(np.float32)
    shift[dead] = 0.0
    w2 = rng.standard_normal((2, channels, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (b1, "b1"), (scale, "scale"), (shift, "shift"), (w2, "w2"),
        (np.array([0, 0], np.int64), "starts"), (np.array([7, 7], np.int64), "ends"),
        (np.array([2, 3], np.int64), "axes"))]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["c1"], name="up", strides=[1, 1]),
        helper.make_node("Slice", ["c1", "starts", "ends", "axes"], ["s1"]),
        helper.make_node("Transpose", ["s1"], ["t1"], perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["t1", "scale"], ["m1"]),
        helper.make_node("Add", ["m1", "shift"], ["a1"]),
        helper.make_node("LeakyRelu", ["a1"], ["r1"], alpha=0.2),
        helper.make_node("Transpose", ["r1"], ["t2"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t2", "w2"], ["y"], name="out", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7, 7])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_pruning_removes_the_weakest_channels_through_transposes_slices_and_per_channel_ops():
    model, x = chain(dead=[1, 4]), np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    pruned, report = prune_channels(model, 0.25)
    assert report.layers == [{"layer": "up", "channels": 8, "kept": 6}]
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    up = next(n for n in pruned.graph.node if n.name == "up")
    assert weights[up.input[1]].shape == (3, 6, 3, 3)  # the graph shrank, not zeroed
    assert report.params_after < report.params_before
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=1e-5, atol=1e-5)  # only the zero filters went


def test_pruning_live_channels_changes_the_output_and_the_graph_stays_valid():
    model, x = chain(dead=[]), np.ones((1, 3, 6, 6), np.float32)
    pruned, report = prune_channels(model, 0.5)
    assert report.layers[0]["kept"] == 4
    out = run(pruned, x)
    assert out.shape == (1, 2, 7, 7) and not np.allclose(out, run(model, x))


@pytest.mark.parametrize("ratio", [0, 1, -0.5, 1.5])
def test_a_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ConversionError, match=r"ratio in \(0, 1\)"):
        prune_channels(chain([]), ratio)


def test_a_graph_with_nothing_to_prune_is_refused():
    model = chain([])
    model.graph.node.insert(5, helper.make_node("Softmax", ["a1"], ["soft"]))  # a channel-mixing op in the way
    model.graph.node[6].input[0] = "soft"
    with pytest.raises(ConversionError, match="no layer whose channels can be removed"):
        prune_channels(model, 0.5)


def dense(dead: list[int], channels: int = 8) -> onnx.ModelProto:
    """z [1,4] → MatMul to 3·3·C features → per-feature scale and shift (a folded BatchNorm1d)
    → LeakyRelu → Reshape to NHWC [-1,3,3,C] → Transpose → ConvTranspose(C→2): the DCGAN's
    first layer, whose features are positions × channels, channels last. Channels in
    ``dead`` are zero in every position."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 9 * channels)).astype(np.float32)
    scale = rng.uniform(0.5, 2, (1, 9 * channels)).astype(np.float32)
    shift = rng.standard_normal((1, 9 * channels)).astype(np.float32)
    channel_of = np.arange(9 * channels) % channels
    w[:, np.isin(channel_of, dead)], shift[:, np.isin(channel_of, dead)] = 0.0, 0.0
    w2 = rng.standard_normal((channels, 2, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w, "w"), (scale, "scale"), (shift, "shift"), (w2, "w2"), (np.array([-1, 3, 3, channels], np.int64), "shape"))]
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["h"], name="dense"),
        helper.make_node("Mul", ["h", "scale"], ["m"]),
        helper.make_node("Add", ["m", "shift"], ["a"]),
        helper.make_node("LeakyRelu", ["a"], ["r"], alpha=0.2),
        helper.make_node("Reshape", ["r", "shape"], ["nhwc"]),
        helper.make_node("Transpose", ["nhwc"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ConvTranspose", ["nchw", "w2"], ["y"], name="up"),
    ]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_dense_layer_reshaped_into_channels_loses_whole_channels_in_every_position():
    model = dense(dead=[0, 3, 6])
    z = np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32)
    pruned, report = prune_channels(model, 3 / 8)
    assert report.layers == [{"layer": "dense", "channels": 8, "kept": 5}]
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    node = {n.name or n.op_type: n for n in pruned.graph.node}
    assert weights[node["dense"].input[1]].shape == (4, 45)
    assert weights[node["Mul"].input[1]].shape == (1, 45) and weights[node["Add"].input[1]].shape == (1, 45)
    assert list(weights[node["Reshape"].input[1]]) == [-1, 3, 3, 5]
    assert weights[node["up"].input[1]].shape == (5, 2, 3, 3)
    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"z": z})[0], reference.run(None, {"z": z})[0], rtol=1e-5, atol=1e-5)


def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(n)]


def test_reconstruction_removes_a_duplicate_channel_without_changing_the_output():
    model = chain(dead=[])
    weights = {t.name: t for t in model.graph.initializer}
    for name, axis in (("w1", 1), ("b1", 0), ("scale", 0), ("shift", 0)):  # channel 6 = channel 2
        value = numpy_helper.to_array(weights[name]).copy()
        np.moveaxis(value, axis, 0)[6] = np.moveaxis(value, axis, 0)[2]
        weights[name].CopyFrom(numpy_helper.from_array(value, name))
    x = feeds(1, 9)[0]["x"]
    pruned, report = prune_channels(model, 1 / 8, feeds(16, 8))
    assert report.reconstructed and report.layers[0]["kept"] == 7
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=1e-3, atol=1e-3)
    plain, _ = prune_channels(model, 1 / 8)  # by L1 norm alone a live channel goes
    assert not np.allclose(run(plain, x), run(model, x), atol=1e-2)


def test_reconstruction_brings_a_pruned_graph_closer_to_the_unpruned_one_on_unseen_inputs():
    model = chain(dead=[])
    test = feeds(8, 99)
    reference = np.concatenate([run(model, f["x"]) for f in test])

    def error(pruned: onnx.ModelProto) -> float:
        return float(np.mean((np.concatenate([run(pruned, f["x"]) for f in test]) - reference) ** 2))

    plain, _ = prune_channels(model, 0.5)
    rebuilt, report = prune_channels(model, 0.5, feeds(32, 7))
    assert 0 < report.layers[0]["reconstructed_r2"] <= 1
    assert error(rebuilt) < 0.5 * error(plain)


def test_convert_prunes_before_quantizing_grades_against_the_unpruned_model_and_records_it(tmp_path):
    out = tmp_path / "pruned.eaigc"
    [result] = convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], out,
                       ConvertOptions(recipe="int8-dynamic", prune=0.5, allow_degraded=True))
    with load_bundle(out) as b:
        pruned = b.manifest.source["pruned"]
        assert pruned["ratio"] == 0.5 and pruned["layers"] and pruned["params_after"] < pruned["params_before"]
        assert pruned["reconstructed"] and all("reconstructed_r2" in layer for layer in pruned["layers"])
    assert result.model_bytes < result.fp32_bytes
    assert result.fidelity.metrics["psnr_db"] < 60  # graded against the unpruned fp32, not itself


def test_prune_refuses_tflite_and_language_models(tmp_path):
    with pytest.raises(ConversionError, match="ONNX bundles only"):
        convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("rpi4")], tmp_path / "a.eaigc",
                ConvertOptions(prune=0.25, format="tflite"))
    from tests.helpers.tiny_lm import save_tiny_lm
    with pytest.raises(ConversionError, match="language model has none"):
        convert(str(save_tiny_lm(tmp_path / "lm")), [get_profile("x86-avx2")], tmp_path / "b.eaigc",
                ConvertOptions(prune=0.25))
