"""Request parameters: each declared once with its type, default and range.

A task's parameters are in its TaskSpec (spec.py, written in the task's module). The CLI builds
its options from them, every front end validates with them before a request is queued, and a
bad value raises ``BadRequest`` naming the parameter. Every numeric parameter is capped, so no
request can ask for unbounded work.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequest
from .spec import Param, get_spec

__all__ = ["Param", "validate_params", "is_text"]


def is_text(value: str) -> bool:
    """False for a string JSON allows but Unicode does not: one holding a lone surrogate (\\ud800)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _coerce(p: Param, value: Any) -> Any:
    if p.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.kind is str and p.name in ("label", "speaker") and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a class index given as a number
    if not isinstance(value, p.kind) or (p.kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"parameter {p.name!r}: expected {p.kind.__name__}, got {type(value).__name__}")
    if p.kind in (int, float):
        if value != value or (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi):
            raise BadRequest(f"parameter {p.name!r}: {value!r} is out of range [{p.lo:g}, {p.hi:g}]")
    if p.kind is str and p.max_len is not None and len(value) > p.max_len:
        raise BadRequest(f"parameter {p.name!r}: longer than {p.max_len} characters")
    if p.kind is dict and p.max_len is not None and len(json.dumps(value)) > p.max_len:
        raise BadRequest(f"parameter {p.name!r}: over {p.max_len} bytes as JSON")
    if p.choices and value not in p.choices:
        raise BadRequest(f"parameter {p.name!r}: {value!r} is not one of {', '.join(p.choices)}")
    if any(isinstance(v, str) and not is_text(v) for v in (value if p.kind is list else [value])):
        raise BadRequest(f"parameter {p.name!r}: holds a lone UTF-16 surrogate; not valid Unicode text")
    if p.kind is list and p.items == "message":
        return _messages(p, value)
    if p.kind is list:
        if len(value) > (p.max_len or 0) or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
            raise BadRequest(f"parameter {p.name!r}: expected up to {p.max_len} non-empty strings "
                             "of at most 64 characters")
    return value


MAX_CHAT_CHARS = 32768


def _messages(p: Param, value: list) -> list[dict[str, str]]:
    """Chat turns: 1..max_len objects of exactly a known ``role`` and a string ``content``."""
    from .text.chat import ROLES

    if not value or len(value) > (p.max_len or 0):
        raise BadRequest(f"parameter {p.name!r}: expected 1 to {p.max_len} messages, got {len(value)}")
    total = 0
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise BadRequest(f"parameter {p.name!r}: message {i} must be an object of exactly 'role' and 'content'")
        if m["role"] not in ROLES:
            raise BadRequest(f"parameter {p.name!r}: message {i} has role {m['role']!r} "
                             f"(known: {', '.join(ROLES)})")
        if not isinstance(m["content"], str) or not is_text(m["content"]):
            raise BadRequest(f"parameter {p.name!r}: message {i}'s content must be text")
        total += len(m["content"])
    if total > MAX_CHAT_CHARS:
        raise BadRequest(f"parameter {p.name!r}: {total} characters of content; at most {MAX_CHAT_CHARS}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def validate_params(task: str, params: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checked parameters with defaults filled in (bundle defaults override the spec's)."""
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    spec = get_spec(task)
    specs = {p.name: p for p in spec.params}
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} for {task} "
                         f"(known: {', '.join(specs)})")
    out: dict[str, Any] = {}
    for name, p in specs.items():
        if name in params and params[name] is not None:
            out[name] = _coerce(p, params[name])
        elif p.required:
            raise BadRequest(f"parameter {name!r} is required for {task}")
        else:
            default = (defaults or {}).get(name, p.default)
            out[name] = list(default) if isinstance(default, list) else default
    for group in [spec.one_of] if spec.one_of else []:
        given = [n for n in group if out.get(n) is not None]
        if len(given) != 1:
            raise BadRequest(f"parameter {group[0]!r} is required for {task} (or give "
                             f"{' or '.join(repr(n) for n in group[1:])})" if not given else
                             f"give one of {', '.join(repr(n) for n in group)}, not both")
    return out
