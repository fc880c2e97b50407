"""``edge-aigc debug-quant FP32_BUNDLE QUANT_BUNDLE``: which layers did quantization break (host side).

Runs both bundles' graphs (ONNX or TFLite) on the fidelity gate's inputs, compares every
weighted op's output by name, ranks the ops by the error each one added (ONNX: the op run
alone; TFLite: the op's own share, estimated from its input's and output's SNR), and suggests a ``--keep-float`` set for
``edge-aigc convert`` (converters/debug/debug_quant.py says how).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BackendUnavailable
from .convert import HOST_HINT
from .output import table


def _debug(args: argparse.Namespace) -> int:
    try:
        from converters.debug import debug_quant as dq
    except ImportError as exc:
        raise BackendUnavailable(f"debug-quant needs the host extra ({exc.name} is missing): {HOST_HINT}") from None
    from ..bundle.signing import load_public_key

    key = load_public_key(Path(args.pubkey)) if args.pubkey else None
    result = dq.debug_quant(Path(args.fp32), Path(args.quantized), args.samples, args.suggest, key)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        rows = [(e.index, e.node, e.op_type, "—" if e.isolated_snr_db != e.isolated_snr_db else f"{e.isolated_snr_db:.1f}",
                 f"{e.snr_db:.1f}", f"{e.added_snr_db:.1f}") for e in result.ranked()[:args.top]]
        print(table(("#", "NODE", "OP", "ALONE SNR dB", "ACCUMULATED SNR dB", "ADDED SNR dB (est.)"), rows))
        drop = _largest_drop(result.layers)
        print(f"\n{len(result.layers)} weighted ops compared on {result.samples} gate inputs; the accumulated "
              f"SNR falls most ({drop[0]:.1f} dB) just before {drop[1]}")
        if result.suggested:
            print(f"suggested: edge-aigc convert SOURCE --recipe {result.recipe} --keep-float {','.join(result.suggested)}")
    if args.plot:
        print(f"wrote {dq.plot(result, Path(args.plot))}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _largest_drop(layers) -> tuple[float, str]:
    """Where the accumulated error jumps: the biggest SNR fall between consecutive weighted ops."""
    pairs = [(a.snr_db - b.snr_db, b.node) for a, b in zip(layers, layers[1:])
             if a.snr_db == a.snr_db and b.snr_db == b.snr_db and abs(a.snr_db) < 1e9 and abs(b.snr_db) < 1e9]
    return max(pairs) if pairs else (0.0, layers[0].node)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("debug-quant", help="per-layer error of a quantized bundle against its fp32 one",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32", help="the fp32 bundle")
    p.add_argument("quantized", help="the quantized bundle of the same model")
    p.add_argument("--samples", type=int, default=4, help="gate inputs to compare on (default 4)")
    p.add_argument("--top", type=int, default=15, help="rows to show (default 15)")
    p.add_argument("--suggest", type=int, default=4, help="ops to suggest keeping in float (default 4)")
    p.add_argument("--plot", metavar="PNG", help="also write the error by layer as a PNG (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print every layer as JSON")
    p.add_argument("--pubkey", help="verify both bundles' signatures with this key")
    p.set_defaults(func=_debug)
