"""Drafts for speculative decoding without a draft model: prompt lookup (n-gram matching).

The tokens written so far (prompt and answer) are indexed by their n-grams. To draft, the
last n tokens are looked up (n from ``MAX_NGRAM`` down to 1) and what followed their most
recent earlier occurrence is proposed; the model then checks every drafted token in one
forward pass (tasks/text/decode.py). It pays where an answer copies its request: tool
calls and JSON naming the request's entities, quotes, edits, summaries. llama.cpp's
``--lookup`` and transformers' ``prompt_lookup_num_tokens`` draft the same way.

The draft length adapts to what the model accepts: a fully accepted draft lengthens the
next, a rejected one shortens it, and repeated misses pause drafting for a growing number
of tokens, so free text that copies nothing costs close to plain decoding.
"""
from __future__ import annotations

__all__ = ["NgramDrafter", "MAX_NGRAM", "MAX_DRAFT"]

MAX_NGRAM = 3      # longest n-gram looked up
MAX_DRAFT = 10     # most tokens drafted at once
MAX_PAUSE = 32     # most tokens decoded plainly after misses before drafting again


class NgramDrafter:
    def __init__(self, tokens: list[int]):
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}             # n-gram -> where it last ended
        self._before: dict[tuple[int, ...], int] = {}   # where it ended the time before
        self.length = 4        # tokens to draft next
        self.pause = 0         # tokens left to decode without drafting
        self._misses = 0
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

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that may come next (none while paused or when nothing matches)."""
        if self.pause > 0:
            self.pause -= 1
            return []
        want, end = min(self.length, limit), len(self.tokens)
        if want <= 0:
            return []
        for n in range(min(MAX_NGRAM, end), 0, -1):
            start = self._before.get(tuple(self.tokens[end - n:]), -1)  # the suffix's earlier occurrence
            if start >= 0:
                return self.tokens[start:start + want]
        return []

    def record(self, drafted: int, accepted: int) -> None:
        """How a draft fared: lengthen after a full accept, shorten or pause after misses."""
        self.drafted, self.accepted = self.drafted + drafted, self.accepted + accepted
        if drafted and accepted == drafted:
            self.length, self._misses = min(self.length + 2, MAX_DRAFT), 0
        elif accepted == 0:
            self._misses += 1
            self.length = max(1, self.length // 2)
            self.pause = min(2 ** self._misses, MAX_PAUSE)
        else:
            self.length, self._misses = max(1, accepted + 1), 0
