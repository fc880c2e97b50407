"""A tiny GGUF file written here from a tiny Hugging Face Llama, the way llama.cpp's
convert_hf_to_gguf.py lays one out (tensor names, Q/K rotary permutation, tokenizer keys),
so the GGUF source is tested without downloading anything."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's reordering of Q/K rows for its rotary layout (transformers undoes it on load)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(hf_dir: Path, out: Path, architecture: str = "llama",
                    quant: dict[str, str] | None = None) -> Path:
    """``quant`` maps a GGUF tensor-name part (``attn_q``, ``token_embd``; ``*`` for the rest)
    to a block type (``Q4_0``, ``Q4_1``, ``Q8_0``) for 2-D weights; F32 without it."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    weights = load_file(str(hf_dir / "model.safetensors"))
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(str(out), architecture)
    w.add_name("tiny-gguf")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(cfg["hidden_size"] // heads)
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in special else 1 for t, _ in vocab])
    merges = tok["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_chat_template(CHAT_TEMPLATE)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for hf_name, value in weights.items():
        value = value.astype(np.float32)
        if hf_name in names:
            name = names[hf_name]
        else:
            _, _, layer, rest = hf_name.split(".", 3)
            part = rest.rsplit(".", 1)[0]
            name = f"blk.{layer}.{per_layer[part]}.weight"
            if part == "self_attn.q_proj":
                value = _permute(value, heads)
            elif part == "self_attn.k_proj":
                value = _permute(value, kv_heads)
        kind = None
        if quant and value.ndim == 2:
            kind = next((t for part, t in quant.items() if part != "*" and f"{part}." in name), quant.get("*"))
        if kind:
            qtype = gguf.GGMLQuantizationType[kind]
            w.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def llama_cpp_greedy(gguf: Path, prompt: str, max_tokens: int) -> str:
    """llama.cpp's own greedy completion of ``prompt`` (llama-cpp-python's high-level API, top-k 1),
    with weight repacking off where the CPU advertises AMX, as the kit's engine has it
    (edge_aigc.device.system.advertises_amx says why)."""
    from unittest import mock

    import llama_cpp
    import llama_cpp.llama_cpp as low

    from edge_aigc.device.system import advertises_amx

    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = not advertises_amx()
        return p

    with mock.patch.object(low, "llama_model_default_params", params):
        model = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, n_threads=2, verbose=False)
    out = model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
    return out["choices"][0]["text"]
