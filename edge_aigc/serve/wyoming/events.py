"""Wyoming events read off a connection within limits, every way a client can get them wrong
a :class:`Malformed` (answered with an ``error`` event), never a dropped connection without a
word or a server that waits forever.

An event is a JSON header line (``type``, optional ``data``, ``data_length``,
``payload_length``), then ``data_length`` bytes of more JSON data, then ``payload_length``
bytes of payload. The wyoming package's own reader ends the connection silently on bad JSON;
this one answers it, and goes on reading where the framing is still known (a bad header line
without lengths), or ends the connection where it is not.
"""
from __future__ import annotations

import asyncio
from typing import Any

from wyoming.event import Event

from ...errors import BadRequest
from ..payload import decode_json

__all__ = ["Malformed", "read_event", "MAX_LINE", "MAX_DATA", "MAX_PAYLOAD"]

MAX_LINE = 64 * 1024      # a header line (the StreamReader's limit)
MAX_DATA = 1 << 20        # extra JSON data after the header
MAX_PAYLOAD = 1 << 20     # a TTS server takes no audio in; anything bigger is refused


class Malformed(Exception):
    """A client's event that cannot be taken; ``fatal`` when the connection's framing is lost."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None at the end of the connection."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise Malformed("the connection ended inside an event header", fatal=True) from None
        return None
    except asyncio.LimitOverrunError:
        raise Malformed(f"an event header line over {MAX_LINE} bytes", fatal=True) from None
    header = _json(line, "the event header")
    data_length = _length(header, "data_length", MAX_DATA)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD)
    data = header.get("data") or {}
    try:
        if data_length:
            more = _json(await reader.readexactly(data_length), "the event's data")
            data = {**_object(data, "data"), **more}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise Malformed("the connection ended inside an event's data or payload", fatal=True) from None
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise Malformed("an event needs a 'type' (a string)")
    return Event(type=kind, data=_object(data, "data"), payload=payload)


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = decode_json(raw)
    except BadRequest as exc:
        raise Malformed(f"{what} is not JSON the server can read: {exc}") from None
    return _object(value, what)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} must be a JSON object")
    return value


def _length(header: dict[str, Any], key: str, cap: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= cap:
        raise Malformed(f"'{key}' must be an integer from 0 to {cap}, got {value!r}", fatal=True)
    return value
