"""The layout's rule, checked on the source: every import (lazy ones too) runs down the layers
below, and no module imports itself back through others (no cycles). docs/design.md draws it."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import ROOT

# Lowest first. A room may import its own layer's modules and any layer below; rooms that share
# a layer must not import each other.
LAYERS = [
    ["edge_aigc.contract", "edge_aigc.errors", "edge_aigc._version"],
    ["edge_aigc.device", "edge_aigc.zoo"],
    ["edge_aigc.bundle"],
    ["edge_aigc.backends"],
    ["edge_aigc.tasks"],
    ["edge_aigc.runtime"],
    ["edge_aigc.lifecycle"],
    ["edge_aigc.serve"],
    ["edge_aigc.remote"],
    ["edge_aigc"],                      # the public face: edge_aigc/__init__.py
    ["converters.cache"],
    ["converters.sources"],
    ["converters.quantize"],
    ["converters.export"],
    ["converters.gate"],
    ["converters.debug", "converters.package", "converters.plan"],
    ["converters.pipeline"],
    ["converters"],
    ["converters.zoo"],
    ["benchmarks"],
    ["edge_aigc.cli"],
    ["edge_aigc.__main__"],
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
TOPS = ("edge_aigc", "converters", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The longest LAYERS entry that ``module`` is or is inside."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and docs/design.md")


def imports() -> dict[str, set[str]]:
    """Every module of the project and the project modules it imports (anywhere in it)."""
    paths = [p for top in TOPS for p in (ROOT / top).rglob("*.py")]
    known = {module_name(p) for p in paths}
    found: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found[name].update(t for t in targets if t.split(".")[0] in TOPS and t != name)
    return found


IMPORTS = imports()


def test_every_import_runs_down_the_layers():
    upward = []
    for module, targets in IMPORTS.items():
        for target in targets:
            a, b = room(module), room(target)
            if a != b and RANK[b] >= RANK[a]:
                upward.append(f"{module} -> {target} ({a} is not above {b})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = {m: {t for t in ts if t in IMPORTS} for m, ts in IMPORTS.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
