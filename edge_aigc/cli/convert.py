"""``edge-aigc convert``: a generator to a bundle per device profile (host side).

Imports ``converters`` inside the command: the device install has no torch, and every
other command must work without it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import BackendUnavailable, ConfigError, UsageError
from ..contract import Format
from ..device.profiles import RECIPES, get_profile, list_profiles
from .output import human_bytes, table

HOST_HINT = 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[host]"'


def _thresholds(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {pair!r}: expected KEY=NUMBER, e.g. psnr_db=25") from None
        if not sep:
            raise ConfigError(f"--threshold {pair!r}: expected KEY=NUMBER")
    return out


def _convert(args: argparse.Namespace) -> int:
    try:
        import converters
    except ImportError as exc:
        raise BackendUnavailable(f"convert needs the host extra ({exc.name} is missing): {HOST_HINT}") from None
    profiles = list_profiles() if args.profile == "all" else [get_profile(args.profile)]
    out = Path(args.output)
    if len(profiles) > 1 and out.suffix == ".eaigc":
        raise ConfigError("--profile all writes one bundle per profile: give -o a directory")
    options = converters.ConvertOptions(
        recipe=args.recipe, format=args.format, name=args.name, version=args.version,
        sign_key=Path(args.sign) if args.sign else None, allow_degraded=args.allow_degraded,
        thresholds=_thresholds(args.threshold), calibration_samples=args.calibration_samples,
        validation_samples=args.validation_samples, per_channel=not args.no_per_channel,
        block_size=args.block_size, accuracy_level=args.accuracy_level, lm_export=args.lm_export,
        measurements=tuple(Path(m) for m in args.measurements),
        keep_float=tuple(n.strip() for group in args.keep_float for n in group.split(",") if n.strip()),
        prune=args.prune)
    if args.measurements and args.recipe != "auto":
        raise UsageError("--measurements ranks the candidates of --recipe auto; give --recipe auto too")
    step = [0]

    def progress(line: str) -> None:
        if line.endswith("…"):
            step[0] += 1
        print(f"[{step[0]:>2}] {line}", file=sys.stderr, flush=True)

    results = converters.convert(args.source, profiles, out, options, progress)
    rows = [(r.profile, r.format, r.recipe, human_bytes(r.fp32_bytes), human_bytes(r.model_bytes),
             f"{r.model_bytes / r.fp32_bytes:.2f}x", r.fidelity.summary()
             + ("" if r.fidelity.passed else " [DEGRADED]"), f"{r.seconds:.1f} s", str(r.bundle))
            for r in results]
    print(table(("PROFILE", "FORMAT", "RECIPE", "FP32", "ARTIFACT", "RATIO", "FIDELITY", "TIME", "BUNDLE"),
                rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a PyTorch factory, ONNX file or HF dir into bundle(s)",
                       description="Export, optimize, quantize per profile recipe, check fidelity "
                                   f"against fp32, and package. Needs the host extra: {HOST_HINT}")
    p.add_argument("source", help="package.module:function, path/to/model.onnx (+ sidecar .json), "
                                  "or a local Hugging Face model directory")
    p.add_argument("--profile", required=True, help="device profile name or .toml path, or 'all'")
    p.add_argument("-o", "--output", required=True, help="bundle path (.eaigc), or a directory with --profile all")
    p.add_argument("--recipe", choices=(*RECIPES, "auto"),
                   help="override the profile's recipe; 'auto' builds, gates and measures every recipe the "
                        "profile's formats allow and packages the fastest that passes and fits the budgets")
    p.add_argument("--measurements", action="append", default=[], metavar="FILE",
                   help="with --recipe auto: JSON from 'edge-aigc bench --bundle' run on the device (a file or "
                        "a directory; repeatable), used instead of this host's figures")
    p.add_argument("--format", choices=tuple(Format), help="override the profile's preferred format")
    p.add_argument("--sign", metavar="KEY", help="Ed25519 private key (from edge-aigc keygen) to sign with")
    p.add_argument("--name", help="model name in the manifest (default: from the source)")
    p.add_argument("--version", default="1.0.0", help="model version (default 1.0.0)")
    p.add_argument("--allow-degraded", action="store_true",
                   help="package even when fidelity is below threshold (recorded in the manifest)")
    p.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fidelity threshold, e.g. psnr_db=20 (repeatable)")
    p.add_argument("--calibration-samples", type=int, default=32, help="int8-static calibration inputs")
    p.add_argument("--validation-samples", type=int, default=8, help="seeded inputs for the fidelity gate")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor int8 weight scales")
    p.add_argument("--block-size", type=int, default=32, help="int4: weights per scale (16..256)")
    p.add_argument("--accuracy-level", type=int, default=None, choices=(0, 1, 2, 3, 4),
                   help="int4: MatMulNBits compute precision (4 = int8 activations, fastest on CPU; "
                        "1 = float32). Default: 1 for a GGUF file's own 4-bit blocks, 4 otherwise")
    p.add_argument("--lm-export", choices=("fused", "dynamo"), default="fused",
                   help="LMs of architectures onnxruntime-genai's builder knows (Llama, Qwen, Phi-3, "
                        "Gemma, Mistral, …): its fused graph for fp32/int8-dynamic/int4 (default), "
                        "or the plain dynamo export for every recipe")
    p.add_argument("--keep-float", action="append", default=[], metavar="NAME[,NAME]",
                   help="ops to leave in float in quantized recipes: ONNX node names, or for TFLite the "
                        "op's output tensor (edge-aigc debug-quant suggests them)")
    p.add_argument("--prune", type=float, metavar="RATIO",
                   help="remove this share (0-1) of the channels of every convolution (or dense layer "
                        "reshaped into channels) feeding another, refitting the next layer by least "
                        "squares, before quantizing (ONNX; graded by the same gate)")
    p.set_defaults(func=_convert)
