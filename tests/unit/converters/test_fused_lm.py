"""Fused LM path: onnxruntime-genai's builder graph, run with the cache shared in place."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters import ConvertOptions, convert
from converters.quantize.embedding import quantize_embeddings
from edge_aigc import Runtime, load_bundle
from edge_aigc.backends import open_session
from edge_aigc.errors import BadRequest, BundleError
from edge_aigc.device.profiles import get_profile
from edge_aigc.tasks.text import shared_loop as shared_kv_loop
from edge_aigc.tasks.text.task import make_kv_loop
from tests.helpers.tiny_lm import check_beam_search, hf_greedy, save_tiny_lm


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fused")
    src = save_tiny_lm(tmp / "tiny-llama", context=64, gate_text=True)
    bundle = tmp / "fp32.eaigc"
    convert(str(src), [get_profile("x86-avx2")], bundle, ConvertOptions(recipe="fp32"))
    return src, bundle


def test_cache_grows_in_place_and_greedy_still_equals_pytorch(fused, monkeypatch):
    src, bundle = fused
    monkeypatch.setattr(shared_kv_loop, "INITIAL_CAPACITY", 4)  # grows 4 → 8 → 16 → 32 → 64
    with Runtime([bundle], profile="x86-avx2") as rt:
        task = rt.model("tiny-llama").task
        assert isinstance(task.loop, shared_kv_loop.SharedKvLoop) and task.max_context == 64
        prompt = task.encode("Once upon a time")
        state = task.loop.start(1)
        assert state.capacity == 4
        got = rt.generate("tiny-llama", prompt="Once upon a time", max_new_tokens=40, temperature=0,
                          repetition_penalty=1.0).meta["token_ids"]
    ref = hf_greedy(src, prompt, 40)
    assert got == ref and len(ref) > 8


def test_beam_search_reorders_the_shared_cache(fused):
    _, bundle = fused
    with Runtime([bundle], profile="x86-avx2") as rt:
        check_beam_search(rt, "tiny-llama")


def test_a_step_past_the_context_is_a_bad_request(fused):
    _, bundle = fused
    with load_bundle(bundle) as b:
        cfg = b.manifest.task_config
        loop = make_kv_loop(open_session("onnx", b.file("model.onnx"), None, "tiny-llama"), cfg)
        state = loop.start(1)
        loop.step(state, np.zeros((1, 60), np.int64))
        with pytest.raises(BadRequest, match="exceed the model's context of 64"):
            loop.step(state, np.zeros((1, 5), np.int64))
        assert loop.step(state, np.zeros((1, 4), np.int64)).shape == (1, 4, cfg["vocab_size"])
        with pytest.raises(BundleError, match="unknown kv_layout 'paged'"):
            make_kv_loop(open_session("onnx", b.file("model.onnx"), None, "x"), {**cfg, "kv_layout": "paged"})


def test_int8_embedding_table_keeps_logits_close(fused, tmp_path):
    _, bundle = fused
    with load_bundle(bundle) as b:
        fp32 = tmp_path / "fp32.onnx"
        fp32.write_bytes(b.file("model.onnx").read_bytes())
        cfg = b.manifest.task_config
    q = tmp_path / "q.onnx"
    assert quantize_embeddings(fp32, q) == 1  # the token table; the untied LM head is a MatMul
    floats = [t for t in onnx.load(str(q)).graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT and "embed" in t.name and np.prod(t.dims) > 4096]
    assert not floats
    assert q.stat().st_size < fp32.stat().st_size
    ids = np.array([[5, 17, 42, 99, 3]], np.int64)
    logits = []
    for path in (fp32, q):
        loop = make_kv_loop(open_session("onnx", path, None, "x"), cfg)
        logits.append(loop.step(loop.start(1), ids))
    assert np.max(np.abs(logits[0] - logits[1])) < 0.05 * np.max(np.abs(logits[0]))
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).all()
    gather = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Gather" and "embed" in n.name)
    assert quantize_embeddings(fp32, tmp_path / "kept.onnx", keep_float=(gather,)) == 0  # --keep-float names it


def test_fused_int8_and_int4_use_weight_only_kernels_and_pass_the_gate(fused, tmp_path):
    src, _ = fused
    for recipe in ("int8-dynamic", "int4"):
        out = tmp_path / f"{recipe}.eaigc"
        [result] = convert(str(src), [get_profile("x86-avx2")], out, ConvertOptions(recipe=recipe))
        assert result.fidelity.passed, result.fidelity.summary()
        with load_bundle(out) as b:
            ops = {n.op_type for n in onnx.load(str(b.file("model.onnx"))).graph.node}
            assert {"GroupQueryAttention", "MatMulNBits"} <= ops and "MatMulInteger" not in ops
            assert ort.InferenceSession(str(b.file("model.onnx"))).get_inputs()[0].name == "input_ids"


def test_builder_failure_falls_back_to_the_dynamo_export_and_says_why(tmp_path):
    # The builder needs an end-of-sequence token for its own config and refuses without one.
    src = save_tiny_lm(tmp_path / "no-eos", eos=None, steps=10)
    lines: list[str] = []
    convert(str(src), [get_profile("x86-avx2")], tmp_path / "b.eaigc", ConvertOptions(recipe="fp32"),
            progress=lines.append)
    assert any("using the dynamo export instead" in line and "eos_token_id" in line for line in lines), lines
    with load_bundle(tmp_path / "b.eaigc") as b:
        assert b.manifest.task_config.get("kv_layout", "concat") == "concat"


def test_a_tflite_first_profile_gets_the_fused_onnx_graph_for_an_lm(fused, tmp_path):
    src, _ = fused
    lines: list[str] = []
    [result] = convert(str(src), [get_profile("rpi4")], tmp_path / "pi.eaigc", ConvertOptions(),
                       progress=lines.append)
    assert result.format == "onnx" and result.recipe == "int8-dynamic"
    assert any("rpi4 prefers tflite, but this LM gets the fused ONNX graph" in line for line in lines), lines
    with load_bundle(tmp_path / "pi.eaigc") as b:
        assert b.manifest.task_config["kv_layout"] == "shared"
