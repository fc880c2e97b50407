"""GGUF files as a conversion source: read through transformers, cached as a float32 HF
directory, converted like any HF LM. The GGUF is written here from a tiny Llama."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from converters import ConvertOptions, convert
from converters.sources import load_source
from edge_aigc import Runtime, load_bundle
from edge_aigc.errors import SourceError
from edge_aigc.profiles import get_profile
from tiny_gguf import CHAT_TEMPLATE, write_tiny_gguf
from tiny_lm import hf_greedy, save_tiny_lm


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

    from converters import text_gate
    from converters.export_onnx import export_onnx
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text import make_kv_loop

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
    from converters.gguf_blocks import _read_blocks
    import gguf

    reader = gguf.GGUFReader(str(quantized))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert kinds["token_embd.weight"] == "Q8_0" and kinds["blk.0.attn_q.weight"] == "Q4_0"
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
    assert _read_blocks(norm) is None  # F32: left to the builder, and reported as requantized
