"""Output held to a JSON schema: each token's choice masked to those the schema still allows.

The grammar is compiled from the schema by llguidance (MIT; the ``[json]`` extra): no torch, a
lazily computed mask per token, and an error naming any keyword it does not implement, which
becomes a ``BadRequest``: never silently unconstrained output. (Chosen by measurement beside
outlines-core, whose up-front token index costs more per request than a whole answer's masks:
benchmarks/constrain.py.) The mask applies to the logits before the kit's sampler, so greedy,
sampling, seeds and speculation (a draft token is checked against the masked logits of its
position) all keep their meaning; the decoder feeds the constraint only the tokens it takes.
When the schema is complete, only an end token is allowed, so the answer ends there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BadRequest, Unsupported

__all__ = ["JsonConstraint", "Grammars", "MAX_SCHEMA_BYTES"]

MAX_SCHEMA_BYTES = 16384


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise Unsupported("output held to a JSON schema needs the [json] extra on the device: "
                          "pip install 'edge-aigc[json]'") from None
    return llguidance


class Grammars:
    """One model's tokenizer as llguidance sees it (built on first use: ~0.1 s), and schema
    compilation against it."""

    def __init__(self, tokenizer_json: Path, eos: frozenset[int]):
        self.path, self.eos, self._tokenizer = tokenizer_json, eos, None

    def constraint(self, schema: dict[str, Any]) -> JsonConstraint:
        lg = _llguidance()
        if self._tokenizer is None:
            self._tokenizer = lg.LLTokenizer(str(self.path), eos_token=sorted(self.eos))
        try:
            grammar = lg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"parameter 'json_schema': {exc}") from None
        matcher = lg.LLMatcher(self._tokenizer, grammar)
        if matcher.is_error():
            raise BadRequest(f"parameter 'json_schema': {matcher.get_error()}")
        return JsonConstraint(matcher)


class JsonConstraint:
    """The tokens one answer may take next, given those it took."""

    def __init__(self, matcher: Any):
        self.matcher = matcher
        self._bits: np.ndarray | None = None

    def allowed(self, vocab: int) -> np.ndarray:
        """A bool per logit: the mask for the next token (ids past the tokenizer's never allowed)."""
        if self._bits is None or self._bits.size != vocab:
            bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            mask = np.zeros(vocab, bool)
            n = min(vocab, bits.size)
            mask[:n] = bits[:n].astype(bool)
            self._bits = mask
        return self._bits

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return np.where(self.allowed(logits.shape[-1]), logits, -np.inf)

    def take(self, token: int) -> None:
        if not self.matcher.consume_token(token):  # the mask allowed it: our bug if it does not fit
            raise RuntimeError(f"token {token} was allowed by the schema's mask but does not fit it")
        self._bits = None

    @property
    def complete(self) -> bool:
        return self.matcher.is_accepting()
