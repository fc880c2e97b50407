"""Chat sessions: a text model's KV cache kept between turns, so a turn prefills only what is new.

A request names a ``session`` (its own id, 1–64 of ``A-Z a-z 0-9 . _ -``) and sends the
whole conversation, as OpenAI's API does. The cache is only a cache: the turn's token ids
are compared with the ones already in the session's KV cache, the common prefix is kept
(the cache is cut back to it) and only the rest is prefilled. So a turn is right whether
or not its session survived, and the reply's ``meta.session`` says what happened:
``new``, ``reused`` (with how many tokens were kept), or ``evicted`` (it was dropped to
stay in bounds; the turn re-prefilled).

Sessions are bounded by count, bytes (the KV arrays) and idle time, the least recently
used dropped first; each belongs to one owner (over MQTT, the client's reply topic) and
one model, so a session id never reaches another client's cache, and naming one with
another model is a bad request.

A request without a session reuses a prompt prefix all the same: its owner's last cache for
that model (a *prefix entry*, at most ``max_prefixes`` in all) is taken, cut back to what it
shares with the new prompt, and put back afterwards. Home Assistant's Ollama integration and
most OpenAI clients resend the whole conversation behind a long system prompt on every
request, so the second request prefills only its new turn. Prefix entries share the byte
bound with sessions and are dropped first; one owner's never serves another's request.
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest

__all__ = ["SessionLimits", "SessionCache", "Session", "SESSION_RE"]

SESSION_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 8
    max_bytes: int = 256 << 20       # KV arrays of all sessions together
    idle_ttl_s: float = 600.0
    max_prefixes: int = 4            # owners whose last stateless prompt is kept (0 = no reuse)


@dataclass
class Session:
    model: str
    state: Any                       # the decode loop's state (its KV cache)
    tokens: list[int]                # exactly the ids in that cache, in order
    nbytes: int
    used: float


class SessionCache:
    """Sessions by (owner, id). ``take`` hands one out for a turn; ``put`` returns it."""

    def __init__(self, limits: SessionLimits | None = None, clock=time.monotonic):
        self.limits = limits or SessionLimits()
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._prefixes: OrderedDict[tuple[str, str], Session] = OrderedDict()  # (owner, model)
        self._evicted: OrderedDict[tuple[str, str], None] = OrderedDict()  # to say so on the next turn
        self._lock = threading.Lock()

    def take(self, owner: str, session_id: str, model: str) -> tuple[Session | None, str]:
        """The session (removed until ``put``) and its status: new, reused or evicted."""
        if not SESSION_RE.fullmatch(session_id):
            raise BadRequest("parameter 'session': 1 to 64 of A-Z a-z 0-9 . _ -")
        key = (owner, session_id)
        with self._lock:
            self._expire()
            found = self._items.get(key)
            if found is not None and found.model != model:
                raise BadRequest(f"parameter 'session': {session_id!r} is a session of model {found.model!r}")
            if found is not None:
                del self._items[key]
                return found, "reused"
            return None, "evicted" if self._evicted.pop(key, "absent") is None else "new"

    def put(self, owner: str, session_id: str, session: Session) -> None:
        key = (owner, session_id)
        with self._lock:
            session.used = self._clock()
            self._items[key] = session
            self._items.move_to_end(key)
            self._evicted.pop(key, None)
            self._bound()

    def take_prefix(self, owner: str, model: str) -> Session | None:
        """The owner's last cache for the model (removed until ``put_prefix``), if kept."""
        with self._lock:
            self._expire()
            return self._prefixes.pop((owner, model), None)

    def put_prefix(self, owner: str, model: str, session: Session) -> None:
        if self.limits.max_prefixes <= 0:
            return
        with self._lock:
            session.used = self._clock()
            self._prefixes[(owner, model)] = session
            self._prefixes.move_to_end((owner, model))
            self._bound()

    def _bound(self) -> None:
        """Within the limits: prefix entries go first (the oldest), then the oldest sessions."""
        while len(self._prefixes) > self.limits.max_prefixes:
            self._prefixes.popitem(last=False)
        while self._bytes() > self.limits.max_bytes and self._prefixes:
            self._prefixes.popitem(last=False)
        while len(self._items) > self.limits.max_sessions or self._bytes() > self.limits.max_bytes:
            self._evict(next(iter(self._items)))

    def _bytes(self) -> int:
        return sum(s.nbytes for s in (*self._items.values(), *self._prefixes.values()))

    def drop_model(self, model: str) -> None:
        """Forget a model's sessions (it was unloaded: its states point at a closed session)."""
        with self._lock:
            for key in [k for k, s in self._items.items() if s.model == model]:
                self._evict(key)
            for key in [k for k in self._prefixes if k[1] == model]:
                del self._prefixes[key]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"sessions": len(self._items), "prefixes": len(self._prefixes), "bytes": self._bytes()}

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._items.items() if now - s.used > self.limits.idle_ttl_s]:
            self._evict(key)
        for key in [k for k, s in self._prefixes.items() if now - s.used > self.limits.idle_ttl_s]:
            del self._prefixes[key]

    def _evict(self, key: tuple[str, str]) -> None:
        del self._items[key]
        self._evicted[key] = None
        while len(self._evicted) > 1024:  # remembering evictions is bounded too
            self._evicted.popitem(last=False)
