"""Tiny Hugging Face causal LMs saved to local directories, for converter tests.

A BPE tokenizer is trained on the converters' built-in texts, and the model for a few dozen
steps on them (8 windows a step) and, with ``gate_text``, on the LM gate's text too (the
GPL-3 from Debian's base-files; 4 more windows a step): random
weights have top-1/top-2 logit gaps of ~1e-4, so quantization fidelity on them measures
noise, not the quantizer; and a model that never saw the gate's text scores a perplexity
worse than uniform on it, which added noise can *lower* (measured: 2,300 → 2,000).
"""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from converters.gate.calibration import BUILTIN_TEXTS
from converters.gate.text_gate import GATE_TEXT

VOCAB = 384


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(BUILTIN_TEXTS, trainer)
    return tok


def _config(arch: str, vocab: int, hidden: int, layers: int, ffn: int, context: int, eos: int | None,
            tied: bool = False):
    from transformers import GPT2Config, LlamaConfig

    if arch == "gpt2":
        return GPT2Config(n_layer=layers, n_head=4, n_embd=hidden, n_inner=ffn, vocab_size=vocab,
                          n_positions=context, bos_token_id=eos, eos_token_id=eos)
    return LlamaConfig(num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       hidden_size=hidden, intermediate_size=ffn, vocab_size=vocab,
                       max_position_embeddings=context, bos_token_id=eos, eos_token_id=eos,
                       tie_word_embeddings=tied)


def save_tiny_lm(directory: Path, arch: str = "llama", hidden: int = 64, layers: int = 2,
                 ffn: int = 128, steps: int = 150, seed: int = 0, context: int = 256,
                 eos: int | None = 0, tied: bool = False, gate_text: bool = False) -> Path:
    """``eos=None`` makes a model that never stops early (for requests that must run long);
    ``gate_text`` one whose int8/int4 artifacts the LM gate can grade (it knows the text)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = train_tokenizer()
    model = AutoModelForCausalLM.from_config(_config(arch, tok.get_vocab_size(), hidden, layers, ffn, context, eos, tied))
    corpora = [np.array([i for t in BUILTIN_TEXTS for i in tok.encode(t + "<|endoftext|>").ids])]
    if gate_text:
        corpora.append(np.array(tok.encode(GATE_TEXT.read_text(encoding="utf-8")).ids))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = [ids[s:s + 33] for ids, n in zip(corpora, (8, 4)) for s in rng.integers(0, len(ids) - 33, n)]
        batch = torch.tensor(np.stack(rows))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save(str(directory / "tokenizer.json"))
    return directory


CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('the assistant cannot speak first') }}"
    "{% endif %}{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def save_chat_lm(directory: Path) -> Path:
    """A tiny llama with a ChatML template and its tokenizer config ("chatty")."""
    hf = save_tiny_lm(directory / "chatty", arch="llama", hidden=64, steps=80, seed=5)
    (hf / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (hf / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
    return hf


def check_beam_search(rt, name: str) -> None:
    """One beam equals greedy decoding, and three beams run (beams reorder the cache)."""
    ask = {"prompt": "Once upon a time", "max_new_tokens": 12, "repetition_penalty": 1.0}
    greedy = rt.generate(name, temperature=0, **ask)
    task = rt.model(name).task
    # num_beams=1 in a request means sampling; the beam search itself with one beam is greedy
    *_, one_beam = task.beam_search(task.encode(ask["prompt"]), num_beams=1, budget=12)
    beam3 = rt.generate(name, num_beams=3, **ask)
    assert one_beam == greedy.meta["token_ids"]
    assert beam3.meta["num_beams"] == 3 and beam3.meta["generated_tokens"] > 0


def hf_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Hugging Face ``generate`` (greedy, KV cache) token ids after ``prompt``, cut at EOS.
    ``model`` is a loaded causal LM or its directory."""
    if not isinstance(model, torch.nn.Module):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model, local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    ref = out[0, len(prompt):].tolist()
    eos = model.config.eos_token_id
    return ref[:ref.index(eos)] if eos in ref else ref
