"""A causal LM as a TFLite-exportable module with a fixed-size KV cache.

LiteRT has no dynamic shapes, so the cache is a fixed ``cache_len`` slots per layer and every
step writes its new keys and values into it at ``input_pos`` (``index_copy``):

Inputs:  tokens [1, n] int32, input_pos [n] int32, k_<i> / v_<i> [1, kv_heads, cache_len, head_dim]
Outputs: logits [1, n, vocab], k_<i> / v_<i> (the updated cache)

Inside, the Hugging Face model sees the whole cache as its past plus a 2-D attention mask
that admits slots before ``input_pos[0]`` and the new tokens causally; the entries it appends
are copied back into their slots. Exported as ``prefill_<n>`` signatures and ``decode`` (n = 1);
the device side is ``edge_aigc.tasks.text.litert_loop``.
"""
from __future__ import annotations

import torch

from ..sources.types import LmSpec

__all__ = ["TfliteLmWrapper", "lm_signatures", "cache_names", "PREFILL_SIZES", "MAX_CACHE"]

PREFILL_SIZES = (16, 64)
MAX_CACHE = 1024   # slots per layer; every decode step attends over all of them


def cache_names(spec: LmSpec) -> list[str]:
    return [f"{kind}_{i}" for i in range(spec.num_layers) for kind in ("k", "v")]


class TfliteLmWrapper(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, spec: LmSpec, cache_len: int):
        super().__init__()
        self.model, self.spec, self.cache_len = model, spec, cache_len

    def forward(self, tokens, input_pos, **cache):
        from transformers import DynamicCache

        n, c = tokens.shape[1], self.cache_len
        pos = input_pos.to(torch.int64)
        layers = range(self.spec.num_layers)
        past = DynamicCache(ddp_cache_data=[(cache[f"k_{i}"], cache[f"v_{i}"]) for i in layers],
                            config=self.model.config)
        valid = (torch.arange(c) < input_pos[0]).to(torch.int64)[None]
        mask = torch.cat([valid, torch.ones(1, n, dtype=torch.int64)], dim=1)
        out = self.model(input_ids=tokens.to(torch.int64), attention_mask=mask,
                         position_ids=pos[None], past_key_values=past,
                         use_cache=True)
        result = {"logits": out.logits}
        for i, layer in zip(layers, out.past_key_values.layers):
            for kind, full in (("k", layer.keys), ("v", layer.values)):
                result[f"{kind}_{i}"] = cache[f"{kind}_{i}"].index_copy(2, pos, full[:, :, c:])
        return result


def _example(spec: LmSpec, n: int, cache_len: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {"tokens": torch.randint(0, spec.vocab_size, (1, n), generator=g, dtype=torch.int32),
            "input_pos": torch.arange(n, dtype=torch.int32),
            **{name: torch.zeros(1, spec.num_kv_heads, cache_len, spec.head_dim) for name in cache_names(spec)}}


def lm_signatures(model: torch.nn.Module, spec: LmSpec, cache_len: int | None = None):
    """(wrapper module, cache length, {signature name: example kwargs})."""
    length = min(cache_len or spec.max_context, spec.max_context, MAX_CACHE)
    sigs = {f"prefill_{n}": _example(spec, n, length) for n in PREFILL_SIZES if n < length}
    sigs["decode"] = _example(spec, 1, length)
    return TfliteLmWrapper(model, spec, length).eval(), length, sigs
