"""GGUF files as a conversion source: read through transformers, cached as a float32 HF
directory, converted like any HF LM. The GGUF is written here from a tiny Llama."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from converters import ConvertOptions, convert
from converters.sources.load import load_source
from edge_aigc import Runtime, load_bundle
from edge_aigc.errors import SourceError
from edge_aigc.device.profiles import get_profile
from tests.helpers.tiny_gguf import CHAT_TEMPLATE, llama_cpp_greedy, write_tiny_gguf
from tests.helpers.tiny_lm import hf_greedy, save_tiny_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    hf = save_tiny_lm(d / "tiny-llama", arch="llama", hidden=64, steps=120, seed=3)
    return hf, write_tiny_gguf(hf, d / "Tiny-Llama.F32.gguf")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_AIGC_CACHE", str(tmp_path_factory.getbasetemp() / "gguf-cache"))


def test_a_gguf_file_loads_with_its_weights_tokenizer_and_chat_template(tiny):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    hf, path = tiny
    source = load_source(str(path))
    assert source.name == "tiny-llama" and source.origin["gguf_architecture"] == "llama"
    assert source.task_config["chat_template"] == CHAT_TEMPLATE and source.task_config["eos_token_id"] == [0]
    original = Tokenizer.from_file(str(hf / "tokenizer.json"))
    for text in ("The quick brown fox", "今天天气 <|endoftext|> ok"):
        assert source.tokenizer.encode(text).ids == original.encode(text).ids
    ids = torch.tensor([original.encode("Once upon a time").ids])
    ref = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True).eval()
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, source.lm_model(ids).logits)  # F32 blocks: the same weights


def test_the_dequantized_model_is_cached(tiny):
    weights = Path(load_source(str(tiny[1])).ref) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert Path(load_source(str(tiny[1])).ref) / "model.safetensors" == weights
    assert weights.stat().st_mtime_ns == stamp, "read from the cache, not dequantized again"


def test_a_converted_gguf_generates_what_the_original_model_does(tiny, tmp_path):
    hf, path = tiny
    out = tmp_path / "tiny.eaigc"
    convert(str(path), [get_profile("x86-avx2")], out, ConvertOptions(recipe="fp32"))
    with load_bundle(out) as b:
        assert b.manifest.source["gguf_sha256"] and b.manifest.config.chat_template == CHAT_TEMPLATE
    with Runtime([out], profile="x86-avx2") as rt:
        task = rt.model("tiny-llama").task
        for text in ("The quick brown fox", "Please remember to"):
            got = rt.generate("tiny-llama", prompt=text, max_new_tokens=16).meta["token_ids"]
            assert got == hf_greedy(hf, task.encode(text), 16), text


def test_an_architecture_transformers_cannot_load_is_named(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "rwkv6")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(SourceError, match="GGUF architecture 'rwkv6' is not one transformers can load"):
        load_source(str(tmp_path / "odd.gguf"))


def test_a_file_that_is_not_gguf_is_a_source_error(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF but not really" * 10)
    with pytest.raises(SourceError, match="not a readable GGUF file"):
        load_source(str(bad))


def test_a_truncated_gguf_file_is_a_source_error(tiny, tmp_path):
    data = tiny[1].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SourceError, match="not a readable GGUF file"):
        load_source(str(cut))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A tied tiny Llama written with llama.cpp's block types: Q8_0 embedding/head, Q4_0 for
    Q (so the packed QKV mixes Q4_0 and Q4_1), Q4_1 for the rest."""
    d = tmp_path_factory.mktemp("gguf-q")
    hf = save_tiny_lm(d / "tiny-q", arch="llama", hidden=64, ffn=128, steps=120, seed=5, tied=True,
                      gate_text=True)
    return write_tiny_gguf(hf, d / "Tiny-Q.Q4_1.gguf", quant={"token_embd": "Q8_0", "attn_q": "Q4_0", "*": "Q4_1"})


def test_int4_keeps_the_files_blocks_exactly(quantized, tmp_path):
    import numpy as np
    import onnx

    from converters.gate import text_gate
    from converters.export.onnx import export_onnx
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text.task import make_kv_loop

    lines: list[str] = []
    out = tmp_path / "q.eaigc"
    [result] = convert(str(quantized), [get_profile("x86-avx2")], out,
                       ConvertOptions(recipe="int4", accuracy_level=1), progress=lines.append)
    assert any("11 matrices kept as the file's blocks, embedding tied to the head" in line for line in lines), lines
    assert result.fidelity.passed and result.fidelity.metrics["greedy_agreement"] >= 0.9  # the 8-bit head: int8 activations
    source = load_source(str(quantized))
    reference = export_onnx(source, tmp_path / "fp32.onnx").path  # the blocks dequantized, in float32
    ids = np.array([source.tokenizer.encode(text_gate.GATE_TEXT.read_text()[:400]).ids[:64]], np.int64)
    with load_bundle(out) as b:
        graph = onnx.load(str(b.file("model.onnx"))).graph
        bits = sorted({a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"})
        assert bits == [4, 8]  # the Q8_0 head stays 8-bit
        logits = []
        for path, cfg in ((reference, source.task_config), (b.file("model.onnx"), b.manifest.task_config)):
            loop = make_kv_loop(open_session("onnx", path, None, "t"), cfg)
            logits.append(loop.step(loop.start(1), ids))
    # float32 activations everywhere but the 8-bit head: only the head's int8 activations differ
    assert np.abs(logits[0] - logits[1]).max() < 0.02 * np.abs(logits[0]).max()
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).mean() > 0.95


def test_block_import_refuses_nothing_silently(quantized, tmp_path):
    from converters.quantize.gguf_read import read_blocks
    import gguf

    reader = gguf.GGUFReader(str(quantized))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert kinds["token_embd.weight"] == "Q8_0" and kinds["blk.0.attn_q.weight"] == "Q4_0"
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
    assert read_blocks(norm) is None  # F32: left to the builder, and reported as requantized


def _q4_1_product(blocks, activations, accuracy_level: int):
    """One Q4_1 matrix as the import writes it (MatMulNBits + the residual term), run by ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from converters.quantize.gguf_blocks import BLOCK, _add_minimum_term, _pack, _toposort

    rows, count = blocks.scale.shape
    node = helper.make_node("MatMulNBits", ["A", "B_Q4", "B_scales"], ["Y"], domain="com.microsoft", name="m",
                            K=count * BLOCK, N=rows, bits=4, block_size=BLOCK, accuracy_level=accuracy_level)
    graph = helper.make_graph(
        [node], "q4_1", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, None, count * BLOCK])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, None, rows])],
        [numpy_helper.from_array(_pack(blocks), "B_Q4"), numpy_helper.from_array(blocks.scale, "B_scales")])
    _add_minimum_term(graph, graph.node[0], blocks, helper, numpy_helper, TensorProto)
    _toposort(graph)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": activations})[0]


def test_q4_1_blocks_keep_their_values_and_a_centred_zero_point():
    """Level 1 gives the file's d·q + m exactly; at level 4 (int8 activations) the error is the
    activations' own rounding, not that times q (a zero point of 0 made it several times larger)."""
    import numpy as np

    from converters.quantize.gguf_blocks import BLOCK
    from converters.quantize.gguf_read import Blocks

    rng = np.random.default_rng(3)
    rows, k = 192, 512
    w = (rng.standard_normal((rows, k // BLOCK, BLOCK)) * 0.05).astype(np.float32)
    lo = w.min(-1).astype(np.float16).astype(np.float32)
    d = ((w.max(-1) - lo) / 15).astype(np.float16).astype(np.float32)
    q = np.clip(np.rint((w - lo[..., None]) / d[..., None]), 0, 15).astype(np.uint8)
    weights = (d[..., None] * q + lo[..., None]).reshape(rows, k)  # what llama.cpp dequantizes
    a = rng.standard_normal((1, 4, k)).astype(np.float32)
    a[..., rng.choice(k, 6, replace=False)] *= 20  # outlier channels, as in a real LM's activations
    exact = a @ weights.T
    blocks = Blocks(4, BLOCK, q, d, lo)

    def error(y):
        return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))

    assert error(_q4_1_product(blocks, a, accuracy_level=1)) < 1e-4
    grouped = a.reshape(1, 4, k // BLOCK, BLOCK)
    step = np.abs(grouped).max(-1, keepdims=True) / 127
    activations_alone = error((np.rint(grouped / step) * step).reshape(a.shape) @ weights.T)
    assert error(_q4_1_product(blocks, a, accuracy_level=4)) < 1.5 * activations_alone


def test_a_file_of_4_bit_blocks_defaults_to_int4_at_float32_activations(tiny, quantized, tmp_path):
    import dataclasses

    import onnx

    from converters.plan import default_recipe

    x86 = get_profile("x86-avx2")
    assert x86.recipe_for("onnx", "text-generation") == "int8-dynamic"
    assert default_recipe(load_source(str(tiny[1])), x86, "onnx") == "int8-dynamic"  # F32: nothing to keep
    blocks = load_source(str(quantized))
    assert blocks.origin["gguf_4bit_share"] > 0.5 and default_recipe(blocks, x86, "onnx") == "int4"
    named = dataclasses.replace(x86, onnx=dataclasses.replace(x86.onnx, task_recipes=(("text-generation", "fp32"),)))
    assert default_recipe(blocks, named, "onnx") == "fp32"  # a profile that names a text recipe keeps it
    lines: list[str] = []
    [result] = convert(str(quantized), [x86], tmp_path / "q.eaigc", ConvertOptions(), progress=lines.append)
    assert result.recipe == "int4" and result.fidelity.passed
    assert any("int4 rather than its int8-dynamic" in line and "--recipe to override" in line for line in lines)
    with load_bundle(tmp_path / "q.eaigc") as b:
        graph = onnx.load(str(b.file("model.onnx"))).graph
    levels = {a.i for n in graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"
              if any(b.name == "bits" and b.i == 4 for b in n.attribute)}
    assert levels == {1}


@pytest.mark.parametrize("which,recipe", [("tiny", "fp32"), ("quantized", "int4")])
def test_format_gguf_packages_the_file_as_it_is_through_the_lm_gate(request, tmp_path, which, recipe):
    """The GGUF file is the bundle's model, byte for byte, graded by the same real-text LM gate
    against the same float reference as an ONNX artifact; llama.cpp runs it."""
    from converters import ConvertOptions, convert
    from edge_aigc import Runtime, load_bundle
    from edge_aigc.device.profiles import get_profile

    fixture = request.getfixturevalue(which)
    gguf = fixture[1] if which == "tiny" else fixture
    [result] = convert(str(gguf), [get_profile("x86-avx2")], tmp_path / "b.eaigc", ConvertOptions(format="gguf"))
    assert (result.format, result.recipe) == ("gguf", recipe) and result.fidelity.passed, result.fidelity.summary()
    assert {"ppl_ratio", "greedy_agreement", "answers_kept"} <= set(result.fidelity.metrics)
    assert 0.9 <= result.bundle.stat().st_size / gguf.stat().st_size <= 1.1
    with load_bundle(result.bundle) as b:
        assert b.file("model.gguf").read_bytes() == gguf.read_bytes()
    with Runtime([result.bundle], "x86-avx2") as rt:
        ours = rt.generate(rt.loaded()[0], prompt="Once upon a time", max_new_tokens=16, temperature=0.0)
    assert ours.text == llama_cpp_greedy(gguf, "Once upon a time", 16)


@pytest.mark.parametrize("which,recipe,kind", [("quantized", "int8-dynamic", "Q8_0"), ("tiny", "int4", "Q4_0")])
def test_format_gguf_requantizes_with_llama_cpps_quantizer(request, tmp_path, which, recipe, kind):
    """Another recipe than the file holds: llama.cpp's own quantizer writes it (Q8_0 for int8,
    Q4_0 for int4, the type llama.cpp repacks on ARM), graded by the same gate, and served."""
    import gguf as gguf_py

    fixture = request.getfixturevalue(which)
    source, held = (fixture, "int4") if which == "quantized" else (fixture[1], "fp32")
    lines: list[str] = []
    [result] = convert(str(source), [get_profile("x86-avx2")], tmp_path / "r.eaigc",
                       ConvertOptions(format="gguf", recipe=recipe, allow_degraded=True), progress=lines.append)
    assert (result.format, result.recipe) == ("gguf", recipe)
    assert any(f"llama.cpp's quantizer ({kind}) from the file's {held}" in line for line in lines)
    with load_bundle(result.bundle) as b:
        matrices = [t for t in gguf_py.GGUFReader(str(b.file("model.gguf"))).tensors if len(t.shape) == 2]
        assert sum(t.tensor_type.name == kind for t in matrices) >= len(matrices) - 2  # llama.cpp keeps the head wider
        with Runtime([result.bundle], "x86-avx2") as rt:
            assert rt.generate(rt.loaded()[0], prompt="Once upon a time", max_new_tokens=8).meta["generated_tokens"] >= 1
    assert {"ppl_ratio", "answers_kept"} <= set(result.fidelity.metrics)


def test_format_gguf_refuses_what_it_cannot_do(tiny, tmp_path):
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile
    from edge_aigc.errors import ConversionError

    x86 = [get_profile("x86-avx2")]
    with pytest.raises(ConversionError, match="cannot be exported to gguf: a gguf bundle is a GGUF file"):
        convert(str(tiny[0]), x86, tmp_path / "b.eaigc", ConvertOptions(format="gguf"))
