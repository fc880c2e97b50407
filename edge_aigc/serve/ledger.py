"""Bookkeeping for the service: which request ids were seen, and how requests went.

``RequestLedger`` de-duplicates by id: a redelivered request (QoS 1 retries, a client
re-sending after a lost reply) is not run twice; once finished, its final replies are
kept (bounded by count and bytes) so they can be sent again. ``Stats`` feeds ``metrics``.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Reply", "RequestLedger", "Stats"]


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    content_type: str | None = None
    correlation: bytes | None = None


@dataclass
class _Entry:
    state: str                      # "queued" | "running" | "done"
    replies: list[Reply] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(r.payload) for r in self.replies)


class RequestLedger:
    def __init__(self, max_ids: int, max_bytes: int):
        self.max_ids, self.max_bytes = max_ids, max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def claim(self, request_id: str) -> _Entry | None:
        """Register a new id (returns None), or return the existing entry for a duplicate."""
        with self._lock:
            if request_id in self._entries:
                return self._entries[request_id]
            self._entries[request_id] = _Entry("queued")
            self._trim()
            return None

    def set_state(self, request_id: str, state: str) -> None:
        with self._lock:
            if request_id in self._entries:
                self._entries[request_id].state = state

    def forget(self, request_id: str) -> None:
        """For requests refused before running (busy): the client may retry with the same id."""
        with self._lock:
            entry = self._entries.pop(request_id, None)
            if entry is not None:
                self._bytes -= entry.size

    def finish(self, request_id: str, replies: list[Reply]) -> None:
        with self._lock:
            entry = self._entries.setdefault(request_id, _Entry("done"))
            self._bytes -= entry.size
            entry.state = "done"
            # Keep binary payloads only while they fit; the result event always stays.
            fits = [r for r in replies if r.content_type is None or self._bytes + len(r.payload) <= self.max_bytes]
            entry.replies = fits
            self._bytes += entry.size
            self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_ids or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            if self._entries[oldest].state != "done" and len(self._entries) <= self.max_ids:
                break  # never forget a request that is still queued or running
            self._bytes -= self._entries.pop(oldest).size


class Stats:
    def __init__(self, window: int = 1000):
        self.done = self.failed = self.rejected = 0
        self.last_ms: float | None = None  # the latest request's latency
        self._latencies: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def record(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self.last_ms = round(seconds * 1000, 2)
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def latency_ms(self) -> dict[str, float]:
        with self._lock:
            values = np.array(self._latencies, dtype=float) * 1000
        if values.size == 0:
            return {}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": round(p50, 2), "p90": round(p90, 2), "p99": round(p99, 2), "n": int(values.size)}
