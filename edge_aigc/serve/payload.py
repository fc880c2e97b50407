"""JSON payloads as every front end takes them: standard JSON, valid Unicode, shallow. Every
way the bytes can be wrong is a ``BadRequest`` naming it (MQTT requests, HTTP bodies)."""
from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequest
from ..tasks.params import is_text

__all__ = ["MAX_DEPTH", "decode_json", "decode", "check_tree"]

MAX_DEPTH = 16  # a request is an object of scalars, one params object and short lists


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"payload is not standard JSON: {name} is not a number JSON allows")


def check_tree(value: Any, depth: int = 0) -> None:
    """Every string (keys too) is valid Unicode, and nesting stays shallow."""
    if depth > MAX_DEPTH:
        raise BadRequest(f"payload is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if not is_text(value):
            raise BadRequest("payload holds a lone UTF-16 surrogate (an escape such as \\ud800 "
                             "without its pair): not valid Unicode text")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_tree(key, depth + 1)
            check_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_tree(item, depth + 1)


def decode_json(payload: bytes) -> Any:
    """JSON text to a value, checked as a request's is (standard JSON, valid Unicode, shallow):
    every way the bytes can be wrong is a BadRequest. The HTTP API parses bodies with it too."""
    data = decode(payload)
    check_tree(data)
    return data


def decode(payload: bytes) -> Any:
    """JSON text to a value; every way the bytes can be wrong is a BadRequest."""
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("payload is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"payload is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadRequest(f"payload is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise BadRequest(f"payload is not usable JSON: {exc}") from None
    return data
