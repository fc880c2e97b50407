"""The ``edge-aigc`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function.
Library errors (:class:`EdgeAigcError`) become one-line messages and the exit code their
class declares; argparse usage errors and commands not available yet exit 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .._version import __version__
from ..errors import EdgeAigcError
from . import bench, bundles, convert, debug_quant, demo, flash, forget, models, profiles, push, run, send, serve

__all__ = ["main", "build_parser"]

# Order shown in --help: what a user meets first, then device-side, then tooling.
_GROUPS = (demo, profiles, convert, debug_quant, bundles, models, run, serve, send, push, forget, flash, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-aigc",
        description="Convert generative models for edge devices, run them offline, serve them over MQTT.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage or not available yet, 3 bundle refused, "
               "4 profile error, 5 store error, 6 config error, 7 request error, 8 backend missing, "
               "9 conversion failed (source or fidelity gate).")
    parser.add_argument("--version", action="version", version=f"edge-aigc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks for errors (also EDGE_AIGC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except EdgeAigcError as exc:
        if args.debug or os.environ.get("EDGE_AIGC_DEBUG"):
            raise
        print(f"edge-aigc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edge-aigc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-aigc profiles | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
