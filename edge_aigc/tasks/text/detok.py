"""Streaming detokenization: text deltas that never split a UTF-8 character or a stop string.

Byte-level BPE tokens can end in the middle of a multi-byte character ("今" is three
bytes, often two tokens); decoding such a prefix yields U+FFFD. The streamer keeps a
small window of ids (the offsets trick of Hugging Face's text-generation-inference) and
emits a delta only once it decodes cleanly, so each step decodes a few tokens, not the
whole output. Stop strings are held back while the text could still be their start.
"""
from __future__ import annotations

__all__ = ["TextStreamer"]


class TextStreamer:
    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self._prefix = self._read = 0
        self.text = ""          # everything decoded so far (before any stop cut)
        self.emitted = 0        # characters of ``text`` already handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; returns the text that is now safe to show (maybe empty)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def _release(self) -> str:
        for stop in self.stop:
            cut = self.text.find(stop)
            if cut != -1:
                self.stopped = True
                self.text = self.text[:cut]
        end = len(self.text)
        if not self.stopped:  # hold back a tail that may grow into a stop string
            for stop in self.stop:
                for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(stop[:k]):
                        end = min(end, len(self.text) - k)
                        break
        delta = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta

    def flush(self) -> str:
        """At the end: whatever was held back for a stop string that never came."""
        delta = self.text[self.emitted:]
        self.emitted = len(self.text)
        return delta
