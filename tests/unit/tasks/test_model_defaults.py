"""A converted Hugging Face LM generates with the model's own defaults (generation_config.json),
token for token what ``generate()`` gives: greedy, every EOS id, its repetition penalty, and beams."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from converters import ConvertOptions, convert
from converters.sources.hf import generation_defaults
from edge_aigc import Runtime, load_bundle
from edge_aigc.device.profiles import get_profile
from tests.helpers.tiny_lm import save_tiny_lm

PROMPTS = ("The quick brown fox", "Please remember to", "It was the best of")
# A second EOS id that is an ordinary token, so stopping on it shows every id is honoured.
GENERATION = {"do_sample": False, "repetition_penalty": 1.3, "max_new_tokens": 24, "eos_token_id": [0, 40],
              "bos_token_id": 0}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, tmp_path_factory):
    """A model shape no other test uses, with a generation_config.json of its own, and its bundle."""
    tmp = tmp_path_factory.mktemp(f"defaults-{request.param}")
    directory = save_tiny_lm(tmp / f"defaults-{request.param}", arch=request.param, hidden=128, layers=3,
                             ffn=160, steps=120, seed=7)
    (directory / "generation_config.json").write_text(json.dumps(GENERATION))
    out = tmp / "lm.eaigc"
    convert(str(directory), [get_profile("x86-avx2")], out, ConvertOptions(recipe="fp32"))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval(), out


def hf_generate(model, prompt: list[int], **overrides) -> list[int]:
    """``generate()`` with the model's generation config (plus overrides), EOS cut off."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             pad_token_id=0, **overrides)
    ids = out[0, len(prompt):].tolist()
    while ids and ids[-1] in GENERATION["eos_token_id"]:
        ids.pop()
    return ids


def test_the_bundle_records_the_models_defaults_and_nothing_else(lm):
    _, bundle = lm
    with load_bundle(bundle) as b:
        cfg = b.manifest.task_config
    assert cfg["sampling"] == {"temperature": 0.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.3,
                               "num_beams": 1, "max_new_tokens": 24}
    assert cfg["eos_token_id"] == [0, 40]


def test_sampling_models_keep_their_temperature():
    from transformers import GenerationConfig

    got = generation_defaults(GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9))
    assert (got["temperature"], got["top_p"], got["top_k"]) == (0.7, 0.9, 50)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_run_with_no_sampling_options_equals_generate_with_the_models_defaults(lm, num_beams):
    model, bundle = lm
    with Runtime([bundle], profile="x86-avx2") as rt:
        name = rt.loaded()[0]
        task = rt.model(name).task
        for text in PROMPTS:
            prompt = task.encode(text)
            ref = hf_generate(model, prompt, num_beams=num_beams)
            extra = {"num_beams": num_beams} if num_beams > 1 else {}
            got = rt.generate(name, prompt=text, **extra)
            assert got.meta["token_ids"] == ref, text
            cli = [sys.executable, "-m", "edge_aigc", "run", str(bundle), "--prompt", text]
            cli += ["--num-beams", str(num_beams)] if num_beams > 1 else []
            out = subprocess.run(cli, capture_output=True, text=True, timeout=120, check=True)
            assert out.stdout.rstrip("\n") == task.tokenizer.decode(ref), text
