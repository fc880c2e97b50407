"""Drafts for speculative decoding without a draft model: prompt lookup (n-gram matching).

The tokens written so far (prompt and answer) are indexed by their n-grams. To draft, the
last n tokens are looked up (n from ``MAX_NGRAM`` down to ``MIN_NGRAM``) and what followed
their most recent earlier occurrence is proposed; the model then checks every drafted token
in one forward pass (tasks/text/decode.py). It pays where an answer copies its request: tool
calls and JSON naming the request's entities, quotes, edits, summaries. llama.cpp's
``--lookup`` and transformers' ``prompt_lookup_num_tokens`` draft the same way.

Whether a draft pays is measured, not assumed: checking k drafted tokens costs a step plus
k times a marginal cost, which on a memory-bound device is small and on a compute-bound one
(a small model on a laptop CPU: measured ~1x a plain step per drafted token) is not. The
decoder reports each step's seconds; the drafter keeps recent figures of a plain step's
time, the marginal time per drafted token and the chance a drafted token is accepted
(each accepted until the first miss), and drafts the length that maximizes expected tokens
per second, or nothing when no length beats plain decoding. It then tries one token every
``EXPLORE_EVERY`` tokens to notice when copying starts paying. The figures (``DraftCosts``)
belong to the model on this device and carry from one request to the next. With
``always`` (the request's ``speculation: on``) every match is drafted, ``ALWAYS`` tokens long.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NgramDrafter", "DraftCosts", "MAX_NGRAM", "MIN_NGRAM", "MAX_DRAFT", "EXPLORE_EVERY", "ALWAYS"]

MAX_NGRAM = 3        # longest n-gram looked up
MIN_NGRAM = 2        # shortest: a single repeated token predicts too little (SmolLM2: 20% accepted)
MAX_DRAFT = 10       # most tokens drafted at once
EXPLORE_EVERY = 64   # tokens between one-token drafts while drafting does not pay
PRIOR_ACCEPT = 0.6   # the chance a drafted token is accepted, before any is checked
KEEP = 0.7           # weight of the old value in each running figure
ALWAYS = 8           # draft length with ``always``


def _blend(old: float | None, new: float) -> float:
    return new if old is None else KEEP * old + (1 - KEEP) * new


@dataclass
class DraftCosts:
    """What drafting costs and gives for one model on this device (running figures)."""
    accept: float = PRIOR_ACCEPT      # chance a drafted token is accepted
    step_s: float | None = None       # a plain step's seconds
    token_s: float | None = None      # a drafted token's marginal seconds


class NgramDrafter:
    def __init__(self, tokens: list[int], costs: DraftCosts | None = None, always: bool = False):
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}     # n-gram -> where it last ended
        self._before: dict[tuple[int, ...], int] = {}   # where it ended the time before
        self.costs, self.always = costs or DraftCosts(), always
        self.idle = 0                     # tokens since the last draft
        self.drafted = self.accepted = 0
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            for n in range(1, min(MAX_NGRAM, end) + 1):
                key = tuple(self.tokens[end - n:end])
                if key in self._last:
                    self._before[key] = self._last[key]
                self._last[key] = end

    def length(self, limit: int) -> int:
        """The draft length with the most expected tokens per second (0: plain decoding pays more)."""
        limit, c = min(limit, MAX_DRAFT), self.costs
        if self.always:
            return min(ALWAYS, limit)
        if c.step_s is None or c.token_s is None:
            return min(4, limit)          # nothing measured yet: measure
        best, best_rate, expected = 0, 1.0 / c.step_s, 1.0
        for k in range(1, limit + 1):
            expected += c.accept ** k
            rate = expected / (c.step_s + c.token_s * k)
            if rate > best_rate:
                best, best_rate = k, rate
        if best == 0 and self.idle >= EXPLORE_EVERY and limit:
            return 1                      # a cheap look at whether copying pays by now
        return best

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that may come next (none when drafting does not pay or nothing matches)."""
        want, end = self.length(limit), len(self.tokens)
        if want > 0:
            for n in range(min(MAX_NGRAM, end), MIN_NGRAM - 1, -1):
                start = self._before.get(tuple(self.tokens[end - n:]), -1)  # the suffix's earlier occurrence
                if start >= 0:
                    self.idle = 0
                    return self.tokens[start:start + want]
        self.idle += 1
        return []

    def record(self, drafted: int, accepted: int, seconds: float) -> None:
        """A decode step: ``drafted`` tokens checked (0: a plain step), ``accepted`` of them
        taken, in ``seconds``."""
        c = self.costs
        if not drafted:
            c.step_s = _blend(c.step_s, seconds)
            return
        self.drafted, self.accepted = self.drafted + drafted, self.accepted + accepted
        # each drafted token is accepted until the first miss: accepted / (accepted + misses)
        c.accept = _blend(c.accept, accepted / (accepted + (accepted < drafted)))
        if c.step_s is not None:
            c.token_s = _blend(c.token_s, max(seconds - c.step_s, 0.0) / drafted)
