"""Commands of the design that later work brings; each says which, and exits 2."""
from __future__ import annotations

import argparse
import sys

# command -> (help line, the work that brings it)
PENDING = {
    "bench": ("benchmark against PyTorch eager and onnxruntime-genai", "the benchmarks"),
}


def _not_yet(args: argparse.Namespace) -> int:
    _, work = PENDING[args.command]
    print(f"edge-aigc {args.command}: not available in this version yet; it arrives with {work}.",
          file=sys.stderr)
    return 2


def register(sub: argparse._SubParsersAction) -> None:
    for name, (help_line, _) in PENDING.items():
        p = sub.add_parser(name, help=f"{help_line} [not available yet]", add_help=False)
        p.set_defaults(func=_not_yet, accepts_anything=True)
