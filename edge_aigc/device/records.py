"""Small JSON records on the device's disk: written atomically, versioned, migrated on read.

The shape is Home Assistant core's ``helpers/storage.Store``: every record is saved as
``{"version": N, "data": …}``; reading one of an older version runs the caller's migrations
in order, and a record that cannot be read (corrupt, or written by a newer release) is renamed
aside as ``<name>.bad`` instead of being lost, so nothing is silently dropped.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["RecordError", "write_atomic", "save_record", "load_record"]

log = logging.getLogger(__name__)

Migration = Callable[[dict[str, Any]], dict[str, Any]]


class RecordError(ValueError):
    """A record that cannot be read; it was moved aside as ``<name>.bad``."""


def write_atomic(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` in one rename: a kill leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def save_record(path: Path, version: int, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps({"version": version, "data": data}, indent=1) + "\n").encode())


def load_record(path: Path, version: int, migrations: dict[int, Migration]) -> dict[str, Any]:
    """The record's data at ``version``. ``migrations[n]`` turns data of version n into n + 1; a
    file that is not exactly ``{"version", "data"}`` is version 1 (the unwrapped records of
    earlier releases, which may have a ``version`` field of their own).
    Raises FileNotFoundError, or RecordError after moving an unreadable file aside."""
    text = path.read_text()
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        found, data = (raw["version"], raw["data"]) if set(raw) == {"version", "data"} else (1, raw)
        if not isinstance(found, int) or not 1 <= found <= version:
            raise ValueError(f"version {found!r}; this release reads versions 1 to {version}")
        for n in range(found, version):
            data = migrations[n](data)
        return data
    except (ValueError, KeyError, TypeError) as exc:
        os.replace(path, path.with_name(path.name + ".bad"))
        raise RecordError(f"{path.name}: {exc}; kept as {path.name}.bad") from None
