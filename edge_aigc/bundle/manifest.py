"""The bundle manifest: the single source of truth for what a model needs at run time.

Field-by-field reference: docs/bundle.md. The manifest is serialized canonically
(sorted keys, UTF-8, no trailing spaces) and the signature covers those exact bytes.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

from ..contract import MANIFEST, SIGNATURE, Format, bundle_tasks
from ..errors import CorruptBundle, UnsupportedSchema
from .task_config import TaskConfig, parse_task_config

__all__ = ["Manifest", "SCHEMA_VERSION", "FORMATS", "check_member_name"]

SCHEMA_VERSION = 1
FORMATS = tuple(Format)
RESERVED = (MANIFEST, SIGNATURE)
# Names and versions become directory names in the device store: keep them boring.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REQUIRED = ("name", "version", "task", "format", "files")
FIELD_TYPES = {"name": str, "version": str, "task": str, "format": str, "files": dict,
               "profile": str, "recipe": str, "io": dict, "task_config": dict, "fidelity": dict,
               "size_bytes": int, "source": dict, "created": str, "converter_version": str}


def check_member_name(name: str) -> str | None:
    """Why a path inside a bundle is unsafe, or None when it is a plain relative path."""
    if not name or "\x00" in name or "\\" in name:
        return "has an empty name or a NUL/backslash in it"
    if name.startswith("/"):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    return None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    format: str
    files: dict[str, str]            # relative path -> sha256 hex
    profile: str = ""
    recipe: str = "fp32"
    io: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    converter_version: str = ""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptBundle(f"manifest.json is not valid UTF-8 JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        if not isinstance(data, dict):
            raise CorruptBundle("manifest.json must hold a JSON object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise CorruptBundle(f"manifest field 'schema': expected a positive integer, got {schema!r}")
        if schema > SCHEMA_VERSION:
            raise UnsupportedSchema(
                f"bundle uses manifest schema {schema}, newer than the {SCHEMA_VERSION} this "
                "edge-aigc understands; upgrade edge-aigc on this device")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorruptBundle(f"manifest field {unknown[0]!r} is not part of schema {schema}")
        for key in REQUIRED:
            if key not in data:
                raise CorruptBundle(f"manifest field {key!r} is missing")
        for key, kind in FIELD_TYPES.items():
            value = data.get(key)
            if key in data and (not isinstance(value, kind) or isinstance(value, bool)):
                raise CorruptBundle(f"manifest field {key!r}: expected {kind.__name__}, "
                                    f"got {type(value).__name__}")
        manifest = cls(**data)
        manifest._check_values()
        return manifest

    def _check_values(self) -> None:
        def bad(key: str, why: str) -> CorruptBundle:
            return CorruptBundle(f"manifest field {key!r}: {why}")

        if not NAME_RE.match(self.name):
            raise bad("name", f"{self.name!r} must match {NAME_RE.pattern}")
        if not VERSION_RE.match(self.version):
            raise bad("version", f"{self.version!r} must match {VERSION_RE.pattern}")
        if self.task not in bundle_tasks():
            raise bad("task", f"{self.task!r} is not one of {', '.join(bundle_tasks())}")
        if self.format not in FORMATS:
            raise bad("format", f"{self.format!r} is not one of {', '.join(FORMATS)}")
        if not self.files:
            raise bad("files", "lists no files")
        for path, digest in self.files.items():
            why = check_member_name(path) or ("is reserved" if path in RESERVED else None)
            if why:
                raise bad("files", f"path {path!r} {why}")
            if not isinstance(digest, str) or not SHA256_RE.match(digest):
                raise bad("files", f"{path!r} has no valid sha256 (64 lowercase hex digits)")
        if self.size_bytes < 0:
            raise bad("size_bytes", "must not be negative")
        _ = self.config  # task_config against its task's schema

    @cached_property
    def config(self) -> TaskConfig:
        """``task_config`` parsed into the task's typed schema (edge_aigc/bundle/task_config.py)."""
        return parse_task_config(self.task, self.task_config)
