"""``edge-aigc debug-quant`` and ``convert --keep-float`` on real conversions of a tiny DCGAN:
the per-layer table, the suggestion, and a re-run that keeps the suggested ops in float."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile

import pytest

from converters import ConvertOptions, convert
from converters.debug.debug_quant import debug_quant
from edge_aigc.errors import ConversionError
from edge_aigc.device.profiles import get_profile

X86 = [get_profile("x86-avx2")]


@pytest.fixture(scope="module")
def dcgan(tmp_path_factory):
    d = tmp_path_factory.mktemp("dq")
    out = {}
    for recipe in ("fp32", "int8-dynamic"):
        [out[recipe]] = convert("tests.helpers.tiny_models:tiny_dcgan", X86, d / f"{recipe}.eaigc",
                                ConvertOptions(recipe=recipe, format="onnx", name="tiny-dcgan", allow_degraded=True))
    return d, out


def graph(bundle):
    import onnx

    with tarfile.open(bundle) as t:
        return onnx.load_from_string(t.extractfile("model.onnx").read()).graph


def test_every_weighted_op_is_compared_and_the_worst_are_suggested(dcgan):
    _, out = dcgan
    result = debug_quant(out["fp32"].bundle, out["int8-dynamic"].bundle, samples=2, suggest=2)
    weighted = [n.name for n in graph(out["fp32"].bundle).node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    assert [e.node for e in result.layers] == weighted and len(weighted) >= 3
    ranked = result.ranked()
    quantized = [e for e in ranked if e.isolated_snr_db != float("inf")]  # quantize_dynamic leaves ConvTranspose
    assert quantized and result.suggested == [e.node for e in quantized[:2]]
    assert all(0 < e.isolated_snr_db < 80 for e in quantized)  # int8 adds some noise to each, not all of it


def test_the_same_bundle_twice_has_no_error_anywhere(dcgan):
    _, out = dcgan
    result = debug_quant(out["fp32"].bundle, out["fp32"].bundle, samples=1)
    assert all(e.snr_db == float("inf") and e.isolated_snr_db == float("inf") for e in result.layers)
    assert result.suggested == []


def test_keep_float_leaves_the_suggested_ops_in_float_and_gains(dcgan):
    d, out = dcgan
    before = debug_quant(out["fp32"].bundle, out["int8-dynamic"].bundle, samples=2, suggest=1)
    [kept] = convert("tests.helpers.tiny_models:tiny_dcgan", X86, d / "kept.eaigc",
                     ConvertOptions(recipe="int8-dynamic", format="onnx", name="tiny-dcgan", allow_degraded=True,
                                    keep_float=tuple(before.suggested)))
    kept_name = before.suggested[0]
    nodes = {n.name: n.op_type for n in graph(kept.bundle).node}
    derived = {name: op for name, op in nodes.items() if name.startswith(kept_name)}
    # still a float op (the quantizer rewrites a Gemm as <name>_MatMul + Add first), no integer one
    assert set(derived.values()) & {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    assert not set(derived.values()) & {"ConvInteger", "MatMulInteger"}, derived
    assert kept.manifest.fidelity["keep_float"] == before.suggested
    after = debug_quant(out["fp32"].bundle, kept.bundle, samples=2)
    alone = {e.node: e.isolated_snr_db for e in after.layers}
    assert alone[before.suggested[0]] == float("inf")  # that op now adds nothing
    assert kept.fidelity.metrics["psnr_db"] >= out["int8-dynamic"].fidelity.metrics["psnr_db"]


def test_a_keep_float_name_that_is_not_a_node_is_refused_with_close_ones(dcgan, tmp_path):
    _, out = dcgan
    name = debug_quant(out["fp32"].bundle, out["int8-dynamic"].bundle, samples=1).layers[0].node
    with pytest.raises(ConversionError, match=r"no such node in the fp32 graph \(close: "):
        convert("tests.helpers.tiny_models:tiny_dcgan", X86, tmp_path / "x.eaigc",
                ConvertOptions(recipe="int8-dynamic", format="onnx", keep_float=(name + "x",)))


def test_keep_float_is_refused_where_it_cannot_apply(tmp_path, bundles):
    with pytest.raises(ConversionError, match="int8-static is quantized by PT2E"):
        convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("rpi4")], tmp_path / "t.eaigc",
                ConvertOptions(recipe="int8-static", format="tflite", keep_float=("/x",)))


def test_a_dynamo_exported_lm_is_compared_on_real_text(tmp_path):
    from tests.helpers.tiny_lm import save_tiny_lm

    hf = save_tiny_lm(tmp_path / "lm", arch="llama")
    out = {}
    for recipe in ("fp32", "int4"):
        [out[recipe]] = convert(str(hf), X86, tmp_path / f"{recipe}.eaigc",
                                ConvertOptions(recipe=recipe, lm_export="dynamo", allow_degraded=True))
    result = debug_quant(out["fp32"].bundle, out["int4"].bundle, samples=2, suggest=2)
    quantized = [e for e in result.layers if e.isolated_snr_db != float("inf")]
    assert quantized and all(e.op_type == "MatMul" for e in quantized) and len(result.suggested) == 2
    [kept] = convert(str(hf), X86, tmp_path / "kept.eaigc",
                     ConvertOptions(recipe="int4", lm_export="dynamo", allow_degraded=True,
                                    keep_float=tuple(result.suggested)))
    again = {e.node: e.isolated_snr_db for e in debug_quant(out["fp32"].bundle, kept.bundle, samples=2).layers}
    assert all(again[n] == float("inf") for n in result.suggested)


def test_the_builders_fused_lm_graphs_are_compared_by_their_precision_named_tensors(tmp_path):
    from tests.helpers.tiny_lm import save_tiny_lm

    hf = save_tiny_lm(tmp_path / "lm", arch="llama")
    out = {}
    for recipe in ("fp32", "int4"):  # the fused graph, the default for Llamas
        [out[recipe]] = convert(str(hf), X86, tmp_path / f"{recipe}.eaigc",
                                ConvertOptions(recipe=recipe, allow_degraded=True))
    same = debug_quant(out["fp32"].bundle, out["fp32"].bundle, samples=1)
    assert same.layers and all(e.isolated_snr_db == float("inf") for e in same.layers)
    result = debug_quant(out["fp32"].bundle, out["int4"].bundle, samples=2)
    layers = {e.node: e for e in result.layers}
    # every projection of both layers and the head, each matched to its MatMul_Q4 twin and run alone
    projections = ("attn/qkv_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
    assert sorted(layers) == sorted([f"/model/layers.{i}/{p}/MatMul" for i in (0, 1) for p in projections]
                                    + ["/lm_head/MatMul"])
    assert all(10 < e.isolated_snr_db < 80 and e.snr_db <= e.isolated_snr_db + 3 for e in layers.values())
    worst = sorted(layers.values(), key=lambda e: e.isolated_snr_db)[:2]
    suggested = debug_quant(out["fp32"].bundle, out["int4"].bundle, samples=2, suggest=2).suggested
    assert suggested == [e.node for e in worst]
    # the builder keeps them float (its nodes_to_exclude): plain MatMuls, no MatMul_Q4 twin, adding nothing
    [kept] = convert(str(hf), X86, tmp_path / "kept.eaigc",
                     ConvertOptions(recipe="int4", allow_degraded=True, keep_float=tuple(suggested)))
    nodes = {n.name: n.op_type for n in graph(kept.bundle).node}
    assert all(nodes.get(name) == "MatMul" and f"{name}_Q4" not in nodes for name in suggested)
    assert sum(op == "MatMulNBits" for op in nodes.values()) == len(layers) - 2
    again = {e.node: e.isolated_snr_db for e in debug_quant(out["fp32"].bundle, kept.bundle, samples=2).layers}
    assert all(again[n] == float("inf") for n in suggested)
    with pytest.raises(ConversionError, match=r"no such quantized node in the fused LM graph \(close: "
                                              r"/model/layers.0/mlp/down_proj/MatMul"):
        convert(str(hf), X86, tmp_path / "typo.eaigc",
                ConvertOptions(recipe="int4", keep_float=("/model/layers.0/mlp/down_proj/Matmul",)))


def test_the_cli_prints_the_table_json_and_a_plot(dcgan, tmp_path):
    _, out = dcgan
    run = [sys.executable, "-m", "edge_aigc", "debug-quant", str(out["fp32"].bundle), str(out["int8-dynamic"].bundle),
           "--samples", "1"]
    table = subprocess.run(run + ["--plot", str(tmp_path / "err.png")], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "ALONE SNR dB" in table.stdout and "--keep-float" in table.stdout
    assert (tmp_path / "err.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(subprocess.run(run + ["--json"], capture_output=True, text=True, timeout=300).stdout)
    assert data["recipe"] == "int8-dynamic" and data["suggested_keep_float"] and data["layers"]
    wrong = subprocess.run([sys.executable, "-m", "edge_aigc", "debug-quant", str(out["int8-dynamic"].bundle),
                            str(out["fp32"].bundle)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 9 and "must be the fp32 one" in wrong.stderr


def test_tflite_bundles_are_compared_tensor_by_tensor_and_keeping_the_worst_op_in_float_removes_its_loss(tmp_path):
    from converters.debug.debug_quant_tflite import WEIGHTED_TFLITE

    rpi4, out = [get_profile("rpi4")], {}
    for recipe in ("fp32", "int8-dynamic"):
        [out[recipe]] = convert("tests.helpers.tiny_models:tiny_dcgan", rpi4, tmp_path / f"{recipe}.eaigc",
                                ConvertOptions(recipe=recipe, format="tflite", name="tiny-dcgan", allow_degraded=True))
    result = debug_quant(out["fp32"].bundle, out["int8-dynamic"].bundle, samples=2, suggest=1)
    assert result.layers and all(e.op_type in WEIGHTED_TFLITE for e in result.layers)
    assert all(math.isnan(e.isolated_snr_db) for e in result.layers)  # TFLite graphs are not cut into pieces
    worst = result.ranked()[0]
    assert result.suggested == [worst.node] and worst.added_snr_db < 80  # int8 weights cost that op some SNR
    assert json.loads(json.dumps(result.to_dict()))["layers"][0]["isolated_snr_db"] is None

    with pytest.raises(ConversionError, match="no op of the fp32 TFLite model writes such a tensor"):
        convert("tests.helpers.tiny_models:tiny_dcgan", rpi4, tmp_path / "typo.eaigc",
                ConvertOptions(recipe="int8-dynamic", format="tflite", keep_float=(worst.node + "x",)))
    [kept] = convert("tests.helpers.tiny_models:tiny_dcgan", rpi4, tmp_path / "kept.eaigc",
                     ConvertOptions(recipe="int8-dynamic", format="tflite", name="tiny-dcgan", allow_degraded=True,
                                    keep_float=tuple(result.suggested)))
    again = {e.node: e for e in debug_quant(out["fp32"].bundle, kept.bundle, samples=2).layers}
    assert again[worst.node].added_snr_db > worst.added_snr_db + 10  # in float it adds (almost) nothing
    assert kept.fidelity.metrics["psnr_db"] > out["int8-dynamic"].fidelity.metrics["psnr_db"]
