"""The next tokens of one sequence: plain decoding, or greedy decoding with drafts checked.

``Decoder.tokens`` yields token ids one at a time; the caller stops taking them at an end
token, a stop string or the budget, and the cache is never fed a token the caller did not
take, except drafted ones, which ``settle`` cuts back. With a drafter (tasks/text/lookup.py)
and greedy decoding, each step feeds the chosen token and a draft together; the logits of
every position say which drafted tokens greedy decoding would have chosen itself, those are
yielded without another forward pass, and the cache is cut back past the first miss. So the
output is exactly plain greedy decoding's (the repetition penalty included: each choice
sees the same earlier tokens), and under a JSON schema's mask (a draft is checked against the
masked logits of its position). Sampling never drafts: checking a sampled draft exactly
needs the draft's own probabilities, which prompt lookup does not have.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np

from ..base import DecodeLoop
from .constrain import JsonConstraint
from .lookup import NgramDrafter
from .sampling import SamplingConfig, choose_next

__all__ = ["Decoder"]


class Decoder:
    def __init__(self, loop: DecodeLoop, state: Any, seen: list[int], logits: np.ndarray,
                 cfg: SamplingConfig, rng: np.random.Generator, drafter: NgramDrafter | None = None,
                 constraint: JsonConstraint | None = None):
        self.loop, self.state, self.cfg, self.rng = loop, state, cfg, rng
        self.constraint = constraint  # a JSON schema's mask on every choice (constrain.py)
        self.seen = seen            # prompt and taken tokens
        self.cached = len(seen)     # tokens in the cache: ``seen``, then fed drafts not yet taken
        self.logits = logits        # for the token after the cache
        self.drafter = drafter if cfg.temperature == 0 else None

    def tokens(self, budget: int) -> Iterator[int]:
        produced = 0
        while produced < budget:
            token = self._choose(self.logits)
            produced += 1
            yield token
            self._take(token)
            if produced == budget:
                return
            draft = self.drafter.draft(budget - produced) if self.drafter else []
            start = time.perf_counter()
            rows = self.loop.step(self.state, np.array([[token, *draft]]))[0]
            seconds = time.perf_counter() - start
            self.cached += 1 + len(draft)
            accepted = 0
            for i, guess in enumerate(draft):
                if self._choose(rows[i]) != guess:
                    break
                accepted += 1
                produced += 1
                yield guess
                self._take(guess)
            if self.drafter:
                self.drafter.record(len(draft), accepted, seconds)
            if draft:
                if accepted < len(draft):  # the cache past the miss holds tokens nobody took
                    self.cached -= len(draft) - accepted
                    self.loop.truncate(self.state, self.cached)
                if produced >= budget:
                    return
            self.logits = rows[accepted]

    def _choose(self, logits: np.ndarray) -> int:
        if self.constraint is not None:
            logits = self.constraint.apply(logits)
        return choose_next(logits, self.cfg, self.seen, self.rng)

    def _take(self, token: int) -> None:
        self.seen.append(token)
        if self.constraint is not None:
            self.constraint.take(token)
        if self.drafter:
            self.drafter.extend([token])

    def settle(self) -> list[int]:
        """After the caller stopped: the cache cut back to the tokens it took; those ids."""
        if self.cached > len(self.seen):
            self.cached = len(self.seen)
            self.loop.truncate(self.state, self.cached)
        return self.seen[:self.cached]

    def speculation(self) -> dict[str, int] | None:
        if self.drafter is None:
            return None
        return {"drafted": self.drafter.drafted, "accepted": self.drafter.accepted}
