"""A local Hugging Face causal-LM directory as a conversion source (no hub access)."""
from __future__ import annotations

import json
from pathlib import Path

from edge_aigc.contract import KV_INPUTS, KV_OUTPUTS, TOKENIZER, Task
from edge_aigc.errors import SourceError

from .types import LmSpec, Source, model_name

__all__ = ["load_hf_dir", "lm_spec", "generation_defaults", "eos_token_ids", "chat_template"]


def generation_defaults(gen) -> dict:
    """What ``generate()`` does with the model's own generation config, in request parameter
    names: ``do_sample`` false means greedy (temperature 0, or beam search when the config
    sets ``num_beams``); unset values take transformers' own defaults; nothing is invented.
    ``max_new_tokens`` is kept only when the config sets it (transformers' ``max_length`` 20
    counts the prompt, which a device request does not)."""
    from transformers import GenerationConfig

    # transformers >= 5 leaves unset fields None and fills them from this table at generate()
    base = getattr(GenerationConfig, "_get_default_generation_params", dict)()

    def value(key: str, fallback):
        got = getattr(gen, key, None)
        return got if got is not None else base.get(key, fallback)

    sample = bool(value("do_sample", False))
    out = {"temperature": float(value("temperature", 1.0)) if sample else 0.0,
           "top_k": int(value("top_k", 50)), "top_p": float(value("top_p", 1.0)),
           "repetition_penalty": float(value("repetition_penalty", 1.0)),
           "num_beams": int(value("num_beams", 1))}
    if getattr(gen, "max_new_tokens", None):
        out["max_new_tokens"] = int(gen.max_new_tokens)
    return out


def eos_token_ids(gen, config) -> list[int]:
    """Every id that ends generation: the generation config's, else the model config's."""
    eos = getattr(gen, "eos_token_id", None)
    eos = eos if eos is not None else config.eos_token_id
    ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    return [int(i) for i in ids if isinstance(i, int) and 0 <= i < config.vocab_size]


def lm_spec(config) -> LmSpec:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    max_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    return LmSpec(
        num_layers=config.num_hidden_layers,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim, vocab_size=config.vocab_size, max_context=int(max_ctx or 2048),
        eos_token_id=eos if isinstance(eos, int) and 0 <= eos < config.vocab_size else None,
        bos_token_id=config.bos_token_id if isinstance(config.bos_token_id, int)
        and 0 <= config.bos_token_id < config.vocab_size else None,
        architecture=(config.architectures or [type(config).__name__])[0])


def _tokenizer(path: Path):
    from tokenizers import Tokenizer

    if (path / TOKENIZER).is_file():
        return Tokenizer.from_file(str(path / TOKENIZER))
    if (path / "vocab.json").is_file() or (path / "tokenizer.model").is_file():
        from transformers import AutoTokenizer  # slow-format files: let transformers convert them

        fast = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return fast.backend_tokenizer
    raise SourceError(f"{path}: no tokenizer.json (or vocab.json/merges.txt, tokenizer.model); "
                      "save the tokenizer next to the model")


def chat_template(path: Path) -> str:
    """The directory's chat template: ``chat_template.jinja`` (transformers >= 4.50 writes it),
    else ``tokenizer_config.json``'s ``chat_template`` (a string, or named templates: the default)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    try:
        value = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return ""
    if isinstance(value, list):  # [{"name": "default", "template": "..."}, ...]
        value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
    return value if isinstance(value, str) else ""


def load_hf_dir(path: Path) -> Source:
    if not (path / "config.json").is_file():
        raise SourceError(f"{path}: a directory source must be a Hugging Face model directory "
                          "with config.json")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"{path}: cannot load as a causal LM: {exc}") from None
    model.eval()
    spec = lm_spec(config)
    tokenizer = _tokenizer(path)
    gen = model.generation_config  # generation_config.json, or derived from config.json as generate() does
    task_config = {
        "tokenizer": TOKENIZER, "vocab_size": spec.vocab_size, "max_context": spec.max_context,
        "num_layers": spec.num_layers, "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "eos_token_id": eos_token_ids(gen, config), "bos_token_id": spec.bos_token_id,
        "architecture": spec.architecture, "kv_inputs": KV_INPUTS,
        "kv_outputs": KV_OUTPUTS, "sampling": generation_defaults(gen),
        "chat_template": chat_template(path),
    }
    name = model_name(path.resolve().name)
    return Source("hf", str(path), name, Task.TEXT, task_config, lm=spec,
                  lm_model=model, tokenizer=tokenizer)
