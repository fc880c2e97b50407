"""Device profiles: what a device is and what it runs.

A profile is a TOML file (``device_profiles/<name>.toml``, shipped as package data)
parsed into a frozen, validated :class:`Profile`. An unknown key, a missing key or a
bad value raises :class:`ProfileError` naming the file and the dotted key.
Field-by-field reference: docs/profiles.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ProfileError
from .tomltable import TomlTable, read_toml
from ..contract import Format, Recipe, bundle_tasks

__all__ = ["Profile", "OnnxConfig", "TfliteConfig", "Budget", "RECIPES", "FORMATS", "DYNAMIC_BLOCK_BASE",
           "load_profile", "list_profiles", "get_profile", "profile_dirs"]

RECIPES = tuple(Recipe)
FORMATS = tuple(Format)
ARCHES = ("x86_64", "aarch64", "armv7l")
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
# ONNX Runtime's `session.dynamic_block_base`: a parallel loop is handed out in blocks that
# start at N / (threads x base) and shrink as it runs, so a thread the OS delays does not
# hold up the node. 0 keeps ONNX Runtime's equal static shares: on a quiet CPU that was as
# fast or faster for every zoo model, base 4 paid only beside another busy process
# (measured in docs/profiles.md).
DYNAMIC_BLOCK_BASE = 0
# ONNX Runtime provider names a profile may list; a typo here would otherwise only
# surface on the device as a silent fallback to CPU.
KNOWN_PROVIDERS = (
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider",
    "XnnpackExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider",
    "QNNExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider",
)


@dataclass(frozen=True)
class OnnxConfig:
    providers: tuple[str, ...]
    recipe: str
    threads: int
    graph_optimization: str = "all"
    reduce_range: bool = False  # int8 on AVX2 without VNNI: avoid u8s8 saturation
    dynamic_block_base: int = DYNAMIC_BLOCK_BASE
    task_recipes: tuple[tuple[str, str], ...] = ()  # (task, recipe): measured exceptions to `recipe`


@dataclass(frozen=True)
class TfliteConfig:
    recipe: str
    threads: int
    task_recipes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Budget:
    max_bundle_mb: int
    max_rss_mb: int


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str
    cpu: str
    cores: int
    memory_mb: int
    isa: tuple[str, ...]
    formats: tuple[str, ...]
    budget: Budget
    onnx: OnnxConfig | None = None
    tflite: TfliteConfig | None = None
    gpu: str = ""
    device_model: str = ""  # substring of /proc/device-tree/model that identifies the board
    path: str = ""

    def recipe_for(self, fmt: str, task: str | None = None) -> str:
        """The format's recipe for ``task``: its ``task_recipes`` entry, else ``recipe``."""
        section = self.onnx if fmt == "onnx" else self.tflite
        if section is None:
            raise ProfileError(f"profile {self.name!r} has no [{fmt}] section")
        return dict(section.task_recipes).get(task, section.recipe) if task else section.recipe

    @property
    def preferred_format(self) -> str:
        return self.formats[0]


def _task_recipes(section: TomlTable) -> tuple[tuple[str, str], ...]:
    """``[<format>.task_recipes]``: task name = recipe, for the tasks whose measured best
    differs from the section's ``recipe`` (docs/profiles.md)."""
    t = section.table("task_recipes", required=False)
    if t is None:
        return ()
    for key in t.data:
        if key not in bundle_tasks():
            raise t.fail(key, f"not a task (tasks: {', '.join(bundle_tasks())})")
    out = tuple((task, t.get(task, str, choices=RECIPES)) for task in sorted(t.data))
    t.finish()
    return out


def _parse(data: dict[str, Any], file: str) -> Profile:
    top = TomlTable(data, file)
    cores = top.get("cores", int, lo=1, hi=1024)
    memory_mb = top.get("memory_mb", int, lo=64)
    formats = top.strings("formats", choices=FORMATS)
    onnx = tflite = None
    if (t := top.table("onnx", required="onnx" in formats)) is not None:
        providers = t.strings("providers", choices=KNOWN_PROVIDERS)
        if "CPUExecutionProvider" not in providers:
            raise t.fail("providers", "must include CPUExecutionProvider as the last resort")
        onnx = OnnxConfig(
            providers=providers,
            recipe=t.get("recipe", str, choices=RECIPES),
            threads=t.get("threads", int, lo=1, hi=cores),
            graph_optimization=t.get("graph_optimization", str, "all", choices=GRAPH_OPT_LEVELS),
            reduce_range=t.get("reduce_range", bool, False),
            dynamic_block_base=t.get("dynamic_block_base", int, DYNAMIC_BLOCK_BASE, lo=0, hi=64),
            task_recipes=_task_recipes(t),
        )
        t.finish()
    if (t := top.table("tflite", required="tflite" in formats)) is not None:
        tflite = TfliteConfig(recipe=t.get("recipe", str, choices=RECIPES),
                              threads=t.get("threads", int, lo=1, hi=cores), task_recipes=_task_recipes(t))
        t.finish()
    b = top.table("budget", required=True)
    budget = Budget(max_bundle_mb=b.get("max_bundle_mb", int, lo=1),
                    max_rss_mb=b.get("max_rss_mb", int, lo=16, hi=memory_mb))
    b.finish()
    profile = Profile(
        name=top.get("name", str), description=top.get("description", str),
        arch=top.get("arch", str, choices=ARCHES), cpu=top.get("cpu", str),
        cores=cores, memory_mb=memory_mb, isa=top.strings("isa", default=[]),
        formats=formats, budget=budget, onnx=onnx, tflite=tflite,
        gpu=top.get("gpu", str, ""), device_model=top.get("device_model", str, ""), path=file,
    )
    top.finish()
    return profile


def load_profile(path: str | os.PathLike) -> Profile:
    """Parse and validate one profile file."""
    path = Path(path)
    profile = _parse(read_toml(path, ProfileError, "profile"), str(path))
    if profile.name != path.stem:
        raise ProfileError(f"{path}: key 'name': {profile.name!r} must match the file name {path.stem!r}")
    return profile


def profile_dirs() -> list[Path]:
    """Where profiles are looked up: $EDGE_AIGC_PROFILES (os.pathsep-separated), then the packaged set."""
    dirs = [Path(p) for p in os.environ.get("EDGE_AIGC_PROFILES", "").split(os.pathsep) if p]
    dirs.append(Path(str(resources.files("edge_aigc.device_profiles"))))
    return dirs


def list_profiles(dirs: list[Path] | None = None) -> list[Profile]:
    """All profiles, validated; a name found in an earlier directory shadows later ones."""
    found: dict[str, Profile] = {}
    for d in dirs if dirs is not None else profile_dirs():
        for path in sorted(Path(d).glob("*.toml")):
            if path.stem not in found:
                found[path.stem] = load_profile(path)
    return sorted(found.values(), key=lambda p: p.name)


def get_profile(name_or_path: str, dirs: list[Path] | None = None) -> Profile:
    """A profile by name (``rpi5``) or by path to a ``.toml`` file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile(name_or_path)
    for d in dirs if dirs is not None else profile_dirs():
        path = Path(d) / f"{name_or_path}.toml"
        if path.is_file():
            return load_profile(path)
    known = ", ".join(p.name for p in list_profiles(dirs))
    raise ProfileError(f"unknown profile {name_or_path!r}; known profiles: {known}")
