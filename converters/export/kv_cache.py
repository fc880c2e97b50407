"""A causal LM as an ONNX-exportable function with its KV cache as explicit tensors.

Inputs:  input_ids [batch, seq] int64, attention_mask [batch, past_seq + seq] int64,
         position_ids [batch, seq] int64, past_key_values.{i}.key / .value
         [batch, kv_heads, past_seq, head_dim] float32 for every layer i.
Outputs: logits [batch, seq, vocab], present.{i}.key / .value [batch, kv_heads, past_seq + seq, head_dim].

The names follow Hugging Face Optimum's, so other tools read these models too. A decode
step feeds one token and the cache; its cost does not grow with the prefix. Prefill
passes a cache of length 0, so one graph serves both.
"""
from __future__ import annotations

import torch

from edge_aigc.contract import kv_name

from ..sources.types import LmSpec

__all__ = ["KvCacheWrapper", "cache_tensor_names", "example_inputs", "dynamic_shapes"]


def cache_tensor_names(spec: LmSpec, template: str) -> list[str]:
    """Every layer's key and value tensor name from a template of edge_aigc.contract
    (``KV_INPUTS``: ``past_key_values.0.key, past_key_values.0.value, …``; ``KV_OUTPUTS``)."""
    return [kv_name(template, i, kind) for i in range(spec.num_layers) for kind in ("key", "value")]


class KvCacheWrapper(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, spec: LmSpec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        n = self.spec.num_layers
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n)],
                             config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers[:n]:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def example_inputs(spec: LmSpec, batch: int = 2, seq: int = 3, past: int = 4) -> tuple:
    # Sizes above 1 on purpose: torch.export specializes dimensions it sees as 0 or 1.
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    cache = [torch.randn(batch, spec.num_kv_heads, past, spec.head_dim, generator=g)
             for _ in range(2 * spec.num_layers)]
    return (ids, mask, pos, *cache)


def dynamic_shapes(spec: LmSpec) -> tuple:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    past, total = torch.export.Dim("past_seq"), torch.export.Dim("total_seq")
    # *past is one varargs parameter, so its shapes nest as one tuple.
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
            tuple({0: batch, 2: past} for _ in range(2 * spec.num_layers)))
