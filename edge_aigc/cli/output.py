"""Plain-text tables for the CLI (no dependency for a few columns)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def numbered(path: Path, index: int, count: int) -> Path:
    """``path`` for output ``index`` of ``count``: ``x.png`` alone, ``x-0.png``, ``x-1.png``… of several."""
    return path.with_name(f"{path.stem}-{index}{path.suffix}") if count > 1 else path


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
