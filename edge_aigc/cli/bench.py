"""``edge-aigc bench``: the side-by-side benchmarks (host side; see benchmarks/README.md).

This module owns the command's arguments and checks them before anything heavy is
imported; ``benchmarks`` (which compares against PyTorch and onnxruntime-genai, absent on
a device) is imported only once the arguments are known to be good, and never imports
this module back.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import BackendUnavailable, UsageError

BENCH_HINT = 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[host,tflite,bench]"'
PARTS = ("text", "image", "audio", "sizes", "mqtt", "http", "cold", "threads", "llm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the short run (a few minutes once artifacts are built)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--out", help="where JSON and plots go (default: benchmarks/results)")
    p.add_argument("--work", default="/tmp/edge-aigc-bench", help="built artifacts, kept between runs")


def parts(only: str) -> set[str]:
    """The ``--only`` parts, or a UsageError naming the unknown ones."""
    chosen = {s.strip() for s in only.split(",") if s.strip()}
    unknown = chosen - set(PARTS)
    if unknown or not chosen:
        raise UsageError(f"unknown --only part(s): {', '.join(sorted(unknown)) or '(none given)'} "
                         f"(known: {', '.join(PARTS)})")
    return chosen


def _checkout() -> Path | None:
    """The source checkout this edge_aigc runs from (an editable install), if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "benchmarks" / "run.py").is_file() else None


def _bench(args: argparse.Namespace) -> int:
    only = parts(args.only)
    root = _checkout()
    if root is None:
        raise BackendUnavailable("bench runs from a source checkout of edge-aigc (benchmarks/ is not "
                                 f"in the wheel): clone it, then {BENCH_HINT}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        import matplotlib  # noqa: F401
        import onnxruntime_genai  # noqa: F401
        import torch  # noqa: F401

        from benchmarks import run
    except ImportError as exc:
        raise BackendUnavailable(f"bench needs the host and bench extras ({exc.name} is missing): "
                                 f"{BENCH_HINT}") from None
    return run.run_from_args(args, only)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark against PyTorch eager and onnxruntime-genai (host)",
                       description="Run the benchmarks side by side; writes JSON, PNG plots and "
                                   "benchmarks/README.md.")
    add_arguments(p)
    p.set_defaults(func=_bench)
