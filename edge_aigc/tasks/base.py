"""What every task yields, and how a request is cancelled.

A task's ``stream(params, cancel)`` is a generator of events — ``Token`` (streamed
text), ``Progress``, ``Chunk`` (a part of the output ready early) and finally one ``Result``. The CLI, the Python API and the MQTT
service all consume this one code path.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from ..contract import EventKind
from ..errors import Cancelled, Timeout

__all__ = ["first_output", "Token", "Progress", "Output", "Chunk", "Result", "Event", "CancelToken", "TaskRunner", "DecodeLoop"]


@dataclass(frozen=True)
class Token:
    text: str          # new text since the previous token event (never a split UTF-8 character)
    token_id: int
    index: int         # 0-based position among generated tokens
    kind: str = EventKind.TOKEN


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    message: str = ""
    kind: str = EventKind.PROGRESS


@dataclass(frozen=True)
class Output:
    content_type: str  # "image/png", "audio/wav"
    data: bytes
    name: str          # suggested file name


@dataclass(frozen=True)
class Chunk:
    """A part of the output, ready before the rest (speech: one sentence's WAV), so that a
    client can start playing; the Result still carries the whole output."""

    index: int         # 0-based
    output: Output
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = EventKind.CHUNK


@dataclass(frozen=True)
class Result:
    model: str
    task: str
    text: str | None = None
    outputs: tuple[Output, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = EventKind.RESULT

    def summary(self) -> dict[str, Any]:
        """``meta`` as shown to people and sent over MQTT: without the generated token ids."""
        return {k: v for k, v in self.meta.items() if k != "token_ids"}


Event = Token | Progress | Chunk | Result


class CancelToken:
    """Set from any thread; tasks call ``check()`` between steps. Optionally carries a deadline."""

    def __init__(self, timeout: float | None = None):
        self._event = threading.Event()
        self.deadline = time.monotonic() + timeout if timeout else None

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("request cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Timeout("request deadline passed")


class DecodeLoop(Protocol):
    """A text model's KV-cache loop (tasks/text/: concat_loop, shared_loop, litert_loop): ``start`` a
    batch, ``step`` token ids through it (logits back), ``reorder`` rows for beam search,
    ``truncate`` the cache to a prefix and say how many bytes it holds (chat sessions)."""

    cache_length: int                # tokens the cache holds (prompt + generated)

    def start(self, batch: int = 1) -> Any: ...

    def step(self, state: Any, ids: Any, last_only: bool = False) -> Any: ...

    def reorder(self, state: Any, rows: Any) -> None: ...

    def truncate(self, state: Any, length: int) -> None: ...

    def state_bytes(self, state: Any) -> int: ...


class TaskRunner(Protocol):
    """What runs one task for one loaded model (TextTask, ImageTask, AudioTask)."""

    task: str

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]: ...


def first_output(result: Result) -> bytes | None:
    """The first output's bytes, or None when the result has none (a degenerate-output check)."""
    return result.outputs[0].data if result.outputs and result.outputs[0].data else None
