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
