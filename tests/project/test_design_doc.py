"""docs/design.md stays true: every module and folder it names exists, and every top-level folder
and every package folder of the code is named in it."""
from __future__ import annotations

import re

from tests.helpers import ROOT

DOC = (ROOT / "docs" / "design.md").read_text()
CODE = ("edge_aigc", "converters", "benchmarks", "tests")


def _expand(token: str) -> list[str]:
    """``converters/{debug,package}`` -> both; other tokens as they are."""
    m = re.search(r"\{([^}]*)\}", token)
    if not m:
        return [token]
    return [token[:m.start()] + part + token[m.end():] for part in m.group(1).split(",")]


def _named_paths() -> set[str]:
    """Paths the page names: backticked ones, and the first column of its layer drawing."""
    tokens = set(re.findall(r"`([^`\s]+)`", DOC))
    drawing = DOC.split("```")[1]
    tokens |= {line.split()[0] for line in drawing.splitlines() if line.strip()}
    return {p.rstrip(",") for t in tokens for p in _expand(t) if "/" in p or p.endswith(".py")}


def test_every_module_and_folder_the_page_names_exists():
    basenames = {p.name for top in CODE for p in (ROOT / top).rglob("*.py")}
    missing = []
    for path in sorted(_named_paths()):
        if ":" in path or "<" in path or path.startswith(("http", "$")):
            continue  # a factory reference, a placeholder or a URL, not a file
        if "/" in path:
            tops = ("", "edge_aigc", "converters", "edge_aigc/serve", "edge_aigc/tasks", "edge_aigc/lifecycle")
            candidates = [ROOT / top / path for top in tops]
            if not any(c.exists() for c in candidates):
                missing.append(path)
        elif path.split("/")[-1] not in basenames:
            missing.append(path)
    assert not missing, f"docs/design.md names what does not exist: {missing}"


def test_every_top_level_and_package_folder_is_named():
    folders = [p.name + "/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and (ROOT / ".git").exists() and _tracked(p.name)]
    folders += [str(p.parent.relative_to(ROOT)) + "/" for top in ("edge_aigc", "converters")
                for p in (ROOT / top).rglob("__init__.py") if p.parent != ROOT / top]
    absent = [f for f in folders if f not in DOC and f.removeprefix("edge_aigc/") not in DOC
              and f"`{f.rstrip('/').rsplit('/', 1)[-1]}/`" not in DOC]
    assert not absent, f"docs/design.md does not name these folders: {absent}"


def _tracked(name: str) -> bool:
    """A folder of the project (not a virtual environment or a build output)."""
    import subprocess

    out = subprocess.run(["git", "ls-files", name], cwd=ROOT, capture_output=True, text=True)
    return bool(out.stdout.strip())
