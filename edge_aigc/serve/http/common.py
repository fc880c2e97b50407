"""What every route over HTTP shares: the status of each error code, the error answer, the
body read under its limit, the bearer token and its check. The OpenAI routes (api.py), the
installs (installs.py) and the server (server.py) use them."""
from __future__ import annotations

import hmac
import ipaddress
import re

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from ...errors import TooLarge
from . import openai as oa

__all__ = ["STATUS", "error", "Failed", "read_body", "bearer", "authorized", "admitted", "disconnected"]

# Our error codes (errors.py) as HTTP statuses.
STATUS = {"bad_request": 400, "unsupported": 400, "unknown_model": 404, "unknown_job": 404, "conflict": 409,
          "too_large": 413, "rejected": 422, "busy": 429, "cancelled": 503,
          "timeout": 504, "internal": 500}


def error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(oa.error_body(status, message, code), status, headers=headers)


class Failed(Exception):
    """An HTTP answer other than 200, raised out of a handler."""

    def __init__(self, response: Response):
        self.response = response


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The request's body, refused (TooLarge) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and re.fullmatch(r"[0-9]{1,18}", declared) and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def admitted(request: HttpRequest, tokens: frozenset[str], networks: tuple) -> bool:
    """Whether a request may use the API: a client of ``http.allow_from`` always; else with a
    valid bearer token when tokens are configured; else a loopback client (a listener elsewhere
    without tokens takes only ``allow_from``'s clients)."""
    peer = _address(request)
    if peer is not None and any(peer in n for n in networks):
        return True
    if tokens:
        return authorized(bearer(request), tokens)
    return peer is not None and peer.is_loopback


def _address(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(request.client.host) if request.client else None
    except ValueError:
        return None


def authorized(given: str | None, tokens: frozenset[str]) -> bool:
    """Whether ``given`` is one of ``tokens``, compared as bytes in constant time: a header's
    text is its bytes read as Latin-1, and compare_digest refuses a str that is not ASCII."""
    if given is None:
        return False
    raw = given.encode("latin-1")
    return any(hmac.compare_digest(raw, t.encode()) for t in tokens)


async def disconnected(request: HttpRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
