"""A local Hugging Face causal-LM directory as a conversion source (no hub access)."""
from __future__ import annotations

import json
from pathlib import Path

from edge_aigc.errors import SourceError

from .sources import LmSpec, Source, model_name

__all__ = ["load_hf_dir", "lm_spec"]

DEFAULT_SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1,
                    "max_new_tokens": 64}


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

    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if (path / "vocab.json").is_file() or (path / "tokenizer.model").is_file():
        from transformers import AutoTokenizer  # slow-format files: let transformers convert them

        fast = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return fast.backend_tokenizer
    raise SourceError(f"{path}: no tokenizer.json (or vocab.json/merges.txt, tokenizer.model); "
                      "save the tokenizer next to the model")


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
    gen_cfg = {}
    if (path / "generation_config.json").is_file():
        gen_cfg = json.loads((path / "generation_config.json").read_text())
    sampling = {**DEFAULT_SAMPLING, **{k: gen_cfg[k] for k in DEFAULT_SAMPLING if k in gen_cfg}}
    task_config = {
        "tokenizer": "tokenizer.json", "vocab_size": spec.vocab_size, "max_context": spec.max_context,
        "num_layers": spec.num_layers, "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "eos_token_id": spec.eos_token_id, "bos_token_id": spec.bos_token_id,
        "architecture": spec.architecture, "kv_inputs": "past_key_values.{layer}.{kind}",
        "kv_outputs": "present.{layer}.{kind}", "sampling": sampling,
    }
    name = model_name(path.resolve().name)
    return Source("hf", str(path), name, "text-generation", task_config, lm=spec,
                  lm_model=model, tokenizer=tokenizer)
