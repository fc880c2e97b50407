"""``edge-aigc profiles``: list, show, check and detect device profiles."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..device.detect import rank_profiles, read_machine
from ..errors import ProfileError
from ..device.profiles import Profile, get_profile, list_profiles, load_profile, profile_dirs
from .output import table

# CPU flags worth printing when describing a machine (the full list is long).
_ISA_OF_INTEREST = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                    "avx_vnni", "amx_int8", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "sve")


def _dirs(args: argparse.Namespace) -> list[Path] | None:
    return [Path(args.dir)] + profile_dirs() if args.dir else None


def _recipe(p: Profile) -> str:
    return f"{p.preferred_format}/{p.recipe_for(p.preferred_format)}"


def _list(args: argparse.Namespace) -> int:
    rows = [(p.name, p.arch, p.cpu, p.cores, f"{p.memory_mb} MB", ",".join(p.formats), _recipe(p),
             ",".join(x.removesuffix("ExecutionProvider") for x in p.onnx.providers) if p.onnx else "-")
            for p in list_profiles(_dirs(args))]
    print(table(("NAME", "ARCH", "CPU", "CORES", "MEMORY", "FORMATS", "DEFAULT", "ONNX PROVIDERS"), rows))
    return 0


def _with_tasks(section) -> str:
    """``int8-dynamic (audio-generation: fp32)``: the recipe and its per-task exceptions."""
    extra = ", ".join(f"{task}: {recipe}" for task, recipe in section.task_recipes)
    return section.recipe + (f" ({extra})" if extra else "")


def _show(args: argparse.Namespace) -> int:
    p = get_profile(args.name, _dirs(args))
    lines = [("name", p.name), ("description", p.description), ("file", p.path),
             ("arch", p.arch), ("cpu", f"{p.cpu} x{p.cores}"), ("memory", f"{p.memory_mb} MB"),
             ("isa", " ".join(p.isa) or "-"), ("gpu", p.gpu or "-"),
             ("board match", p.device_model or "-"), ("formats", ", ".join(p.formats))]
    if p.onnx:
        lines += [("onnx providers", " > ".join(p.onnx.providers)), ("onnx recipe", _with_tasks(p.onnx)),
                  ("onnx threads", p.onnx.threads), ("onnx graph opt", p.onnx.graph_optimization),
                  ("onnx reduce_range", p.onnx.reduce_range),
                  ("onnx block base", p.onnx.dynamic_block_base or "off (static split)")]
    if p.tflite:
        lines += [("tflite recipe", _with_tasks(p.tflite)), ("tflite threads", p.tflite.threads)]
    lines += [("max bundle", f"{p.budget.max_bundle_mb} MB"), ("max RSS", f"{p.budget.max_rss_mb} MB")]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    return 0


def _check(args: argparse.Namespace) -> int:
    for path in args.files:
        p = load_profile(path)
        print(f"{path}: ok ({p.name}, {p.arch}, formats {', '.join(p.formats)})")
    return 0


def _detect(args: argparse.Namespace) -> int:
    m = read_machine()
    ranked = rank_profiles(m, list_profiles(_dirs(args)))
    isa = " ".join(f for f in _ISA_OF_INTEREST if f in m.isa) or "-"
    print(f"This machine: {m.arch}, {m.cpu}, {m.cores} cores, {m.memory_mb} MB"
          + (f", board {m.board!r}" if m.board else ""))
    print(f"  CPU features: {isa}")
    print(f"  onnxruntime providers: {', '.join(m.providers) or 'onnxruntime not installed'}\n")
    print(table(("PROFILE", "FITS", "WHY"),
                [(c.profile.name, "yes" if c.fits else "no", "; ".join(c.reasons)) for c in ranked]))
    best = ranked[0] if ranked and ranked[0].fits else None
    if best is None:
        raise ProfileError("no profile fits this machine; write one (see docs/profiles.md) "
                           "and pass it with --profile path/to/profile.toml")
    print(f"\nSuggested profile: {best.profile.name}  (edge-aigc profiles show {best.profile.name})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list, show, check or detect device profiles",
                       description="Device profiles say what a device is and what it runs. "
                                   "Without an action, lists them.")
    p.add_argument("--detect", action="store_true",
                   help="suggest the best profile for this machine (arch, CPU flags, memory, providers)")
    p.add_argument("--dir", help="also read profiles from this directory (shadows packaged ones)")
    p.set_defaults(func=lambda a: _detect(a) if a.detect else _list(a))
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print one profile")
    show.add_argument("name", help="profile name (e.g. rpi5) or path to a .toml file")
    show.set_defaults(func=_show)
    check = actions.add_parser("check", help="validate profile files")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=_check)
