"""Typed, validated reading of TOML tables (device profiles, service configuration)."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import EdgeAigcError, ProfileError

__all__ = ["TomlTable", "read_toml"]


def read_toml(path: str | os.PathLike, error_class: type[EdgeAigcError], what: str) -> dict[str, Any]:
    """Parse a TOML file, turning "missing" and "not TOML" into ``error_class`` naming the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error_class(f"{path}: no such {what} file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error_class(f"{path}: not valid TOML: {exc}") from None


class TomlTable:
    """Reads typed values out of one TOML table, remembering which keys were used.

    Every problem becomes ``error_class("<file>: key '<dotted.key>': <why>")``; ``finish()``
    reports the first key nobody asked for, so typos are errors, not silent defaults.
    """

    def __init__(self, data: dict[str, Any], file: str, prefix: str = "",
                 error_class: type[EdgeAigcError] = ProfileError):
        self.data, self.file, self.prefix, self.error_class = data, file, prefix, error_class
        self.used: set[str] = set()

    def fail(self, key: str, why: str) -> EdgeAigcError:
        return self.error_class(f"{self.file}: key '{self.prefix}{key}': {why}")

    def get(self, key: str, kind: type, default: Any = ..., choices=None, lo=None, hi=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is an int subclass in Python; a profile saying threads = true is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise self.fail(key, f"{value!r} is out of range (must be {bounds})")
        return value

    def strings(self, key: str, choices=None, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default=default)
        if values is default and default is not ...:
            return tuple(values)
        if not values:
            raise self.fail(key, "must not be empty")
        for v in values:
            if not isinstance(v, str):
                raise self.fail(key, f"expected a list of strings, found {v!r}")
            if choices is not None and v not in choices:
                raise self.fail(key, f"{v!r} is not one of {', '.join(choices)}")
        if len(set(values)) != len(values):
            raise self.fail(key, "has duplicates")
        return tuple(values)

    def table(self, key: str, required: bool) -> "TomlTable | None":
        if key not in self.data:
            if required:
                raise self.fail(key, "missing (required table)")
            self.used.add(key)
            return None
        sub = self.get(key, dict)
        return TomlTable(sub, self.file, f"{self.prefix}{key}.", self.error_class)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key (typo?)")
