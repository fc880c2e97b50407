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
PARTS = ("text", "image", "audio", "sizes", "mqtt", "http", "cold", "threads", "llm", "gate-noise", "reuse", "speech",
         "constrain", "wyoming", "ota", "prune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", metavar="B", help="benchmark this one bundle on this machine instead, with only "
                                                 "the device install (edge_aigc/runtime/bundle_bench.py)")
    p.add_argument("--repeats", type=int, default=5, help="with --bundle: timed runs after the cold one (1-1000)")
    p.add_argument("--profile", help="with --bundle: the device profile (default: detected)")
    p.add_argument("--threads", type=int, help="with --bundle: at most this many threads")
    p.add_argument("--pubkey", help="with --bundle: also check the bundle's signature against this key")
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


def _bench_bundle(args: argparse.Namespace) -> int:
    from ..bundle import signing
    from ..runtime.bundle_bench import bench_bundle, format_report, write_report

    if not 1 <= args.repeats <= 1000:
        raise UsageError(f"--repeats must be between 1 and 1000, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    key = signing.load_public_key(args.pubkey) if args.pubkey else None
    report = bench_bundle(args.bundle, args.profile, args.repeats, args.threads, key,
                          progress=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True))
    print(format_report(report))
    if args.out:
        print(f"wrote {write_report(report, args.out)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.bundle:
        return _bench_bundle(args)
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
    p = sub.add_parser("bench", help="benchmark against PyTorch eager and onnxruntime-genai (host), "
                                     "or one bundle on a device (--bundle)",
                       description="Run the benchmarks side by side; writes JSON, PNG plots and "
                                   "benchmarks/README.md. With --bundle: the bundle's own workload on this "
                                   "machine (throughput and its CV, cold start, peak RSS, machine facts), "
                                   "needing only the device install.")
    add_arguments(p)
    p.set_defaults(func=_bench)
