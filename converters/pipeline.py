"""The conversion pipeline: source → export → optimize → quantize → validate → package.

Export and optimize run once; quantize and validate run once per distinct recipe
setting, so ``--profile all`` does not redo work that profiles share; package runs
per profile. Every step reports through ``progress`` with its time.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from edge_aigc.contract import Task
from edge_aigc.bundle import signing
from edge_aigc.errors import ConversionError, FidelityError
from edge_aigc.bundle.manifest import Manifest
from edge_aigc.device.profiles import RECIPES, Profile

AUTO = "auto"  # the recipe that means: build, gate and measure every candidate (recipe_auto.py)

from .gate.calibration import CALIBRATION_SEED
from .gate.specs import sample_feeds
from .export.onnx import OPSET, export_onnx
from .export.tflite import export_tflite
from .quantize.gguf_blocks import SUPPORTED_ARCHITECTURES, import_gguf_blocks
from .export.lm_builder import build_fused_lm, check_kept_float, fused_task_config, supports
from .export.optimize import optimize_onnx
from .quantize.prune import RECONSTRUCTION_SAMPLES, prune_channels
from .package import package_bundle
from .quantize.recipes import QuantizeOptions, quantize_onnx
from .quantize.embedding import quantize_embeddings
from .gate.recipe_auto import choose, load_measurements
from .sources.load import Source, load_source
from .gate.validate import FidelityReport, Reference, evaluate

__all__ = ["ConvertOptions", "ConversionResult", "convert", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS = ("onnx", "tflite")
Progress = Callable[[str], None]


@dataclass
class ConvertOptions:
    recipe: str | None = None            # None: each profile's default
    format: str | None = None            # None: each profile's preferred format we can build
    name: str | None = None
    version: str = "1.0.0"
    sign_key: Path | None = None
    allow_degraded: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration_samples: int = 32
    validation_samples: int = 8
    per_channel: bool = True
    block_size: int = 32
    # MatMulNBits compute type; None: 1 (float32 activations) for a GGUF file's own 4-bit blocks,
    # where SmolLM2 kept every known answer only so, else 4 (int8 activations, the fast path)
    accuracy_level: int | None = None
    # LMs the onnxruntime-genai builder knows get its fused graph for fp32/int8-dynamic/int4
    # ("fused"); "dynamo" keeps the plain export + our quantizers for every recipe.
    lm_export: str = "fused"
    # recipe "auto": device reports of `edge-aigc bench --bundle` (files or directories) to rank
    # the candidates by; without them each is measured on this host (converters/gate/recipe_auto.py)
    measurements: tuple[Path, ...] = ()
    # ONNX node names to leave in float in every quantized recipe (edge-aigc debug-quant suggests them)
    keep_float: tuple[str, ...] = ()
    # structured channel pruning of the fp32 graph before quantization (converters/quantize/prune.py): the
    # share of each prunable convolution's channels to remove; None: no pruning
    prune: float | None = None


@dataclass(frozen=True)
class ConversionResult:
    profile: str
    format: str
    recipe: str
    bundle: Path
    manifest: Manifest
    fp32_bytes: int
    model_bytes: int
    fidelity: FidelityReport
    seconds: float


@contextmanager
def _step(progress: Progress, label: str) -> Iterator[dict]:
    info: dict = {}
    start = time.perf_counter()
    progress(f"{label} …")
    yield info
    detail = f" ({info['detail']})" if info.get("detail") else ""
    progress(f"{label} done in {time.perf_counter() - start:.1f} s{detail}")


def _buildable(source: Source) -> tuple[str, ...]:
    # TFLite is exported from PyTorch; an ONNX file has no way back there.
    return ("onnx",) if source.kind == "onnx" else SUPPORTED_FORMATS


def _format_for(profile: Profile, source: Source, opts: ConvertOptions, progress: Progress) -> str:
    can, requested = _buildable(source), opts.format
    if opts.prune is not None:  # the ONNX graph is what gets pruned (converters/quantize/prune.py)
        if source.task == Task.TEXT:
            raise ConversionError("--prune removes convolution channels; a language model has none to "
                                  "prune (heads are not pruned)")
        if "onnx" not in profile.formats or requested not in (None, "onnx"):
            raise ConversionError(f"--prune makes ONNX bundles only (TFLite is exported from PyTorch, not from "
                                  f"the pruned graph); profile {profile.name} runs {', '.join(profile.formats)}")
        return "onnx"
    if requested:
        if requested not in profile.formats:
            raise ConversionError(f"profile {profile.name} does not run {requested} "
                                  f"(its formats: {', '.join(profile.formats)})")
        if requested not in can:
            raise ConversionError(f"a {source.kind} source cannot be exported to {requested}: TFLite "
                                  "export needs a PyTorch factory, a Hugging Face directory or a .keras file")
        return requested
    if (opts.lm_export == "fused" and profile.preferred_format != "onnx" and "onnx" in profile.formats
            and supports(source, opts.recipe or default_recipe(source, profile, "onnx"))):
        progress(f"{profile.name} prefers {profile.preferred_format}, but this LM gets the fused ONNX graph, "
                 "whose in-place KV cache decodes far faster than TFLite's fixed cache (docs/converting.md); "
                 "using onnx (--format tflite to override)")
        return "onnx"
    for fmt in profile.formats:
        if fmt in can:
            if fmt != profile.preferred_format:
                progress(f"{profile.name} prefers {profile.preferred_format}, which cannot be "
                         f"built from a {source.kind} source; using {fmt}")
            return fmt
    raise ConversionError(f"profile {profile.name} runs only {', '.join(profile.formats)}, "
                          f"which cannot be built from a {source.kind} source")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(source_ref: str | Path | Source, profiles: list[Profile], out: Path,
            options: ConvertOptions | None = None,
            progress: Progress = lambda line: None) -> list[ConversionResult]:
    """Convert once for each profile. ``out`` is the bundle path for one profile, a directory for several.

    Raises FidelityError (after writing the bundles that passed) if any profile's
    artifact fails the gate and ``allow_degraded`` is off.
    """
    opts = options or ConvertOptions()
    if opts.lm_export not in ("fused", "dynamo"):
        raise ConversionError(f"unknown LM export {opts.lm_export!r}; choose fused or dynamo")
    auto = opts.recipe == AUTO
    if opts.recipe is not None and opts.recipe not in RECIPES and not auto:
        raise ConversionError(f"unknown recipe {opts.recipe!r}; choose one of {', '.join(RECIPES)} or {AUTO}")
    measurements = load_measurements(list(opts.measurements)) if auto else {}
    key = signing.load_private_key(opts.sign_key) if opts.sign_key else None
    with tempfile.TemporaryDirectory(prefix="edge-aigc-convert-") as tmp:
        work = Path(tmp)
        with _step(progress, "load source") as s:
            source = source_ref if isinstance(source_ref, Source) else load_source(source_ref)
            s["detail"] = f"{source.kind}, {source.task}"
        formats = {p.name: _format_for(p, source, opts, progress) for p in profiles}  # fail fast
        with _step(progress, f"export ONNX (dynamo, opset {OPSET})") as s:
            exported = export_onnx(source, work / "exported.onnx")
            if exported.max_abs_diff is not None:
                s["detail"] = f"max |onnx - torch| = {exported.max_abs_diff:.2g}"
        with _step(progress, "optimize (onnxslim)") as s:
            optimized = optimize_onnx(exported.path, work / "reference-fp32.onnx")
            s["detail"] = optimized.note or f"{optimized.nodes_before} → {optimized.nodes_after} nodes"
        fp32_path = optimized.path
        reference = Reference(source, fp32_path, opts.validation_samples)  # the unpruned model, always
        source_record = {"kind": source.kind, "ref": source.ref, "fp32_sha256": _sha256(fp32_path),
                         "opset": OPSET, "export_max_abs_diff": exported.max_abs_diff, **source.origin}
        build_from = fp32_path
        if opts.prune is not None:
            build_from = _prune(source, fp32_path, work, opts.prune, progress, source_record)
        done: dict[tuple, tuple[Path, FidelityReport, dict, float]] = {}

        def artifact(profile: Profile, fmt: str, recipe: str) -> tuple[tuple[Path, FidelityReport, dict, float], bool]:
            """Built and gated once per (format, recipe, reduce_range); True when built before."""
            # reduce_range changes only ONNX int8 weights; other recipes share one artifact.
            reduce_range = (fmt == "onnx" and recipe.startswith("int8")
                            and bool(profile.onnx and profile.onnx.reduce_range))
            cache_key = (fmt, recipe, reduce_range)
            if cache_key in done:
                return done[cache_key], True
            start = time.perf_counter()
            build = _build_onnx if fmt == "onnx" else _build_tflite
            model_path, facts = build(source, build_from, recipe, reduce_range, opts, work, progress)
            config = {**source.task_config, **facts.get("task_config", {})}
            report = _validate(reference, fmt, recipe, model_path, opts, progress, config)
            done[cache_key] = (model_path, report, facts, time.perf_counter() - start)
            return done[cache_key], False

        results, failed = [], []
        for profile in profiles:
            fmt, selection = formats[profile.name], None
            if auto:
                def built(f: str, r: str, profile: Profile = profile) -> tuple[Path, FidelityReport, int]:
                    (path, report, _, _), _ = artifact(profile, f, r)
                    return path, report, path.stat().st_size

                def probe(f: str, r: str, path: Path, profile: Profile = profile) -> Path:
                    (_, report, facts, _), _ = artifact(profile, f, r)
                    bundle = work / f"probe-{profile.name}-{f}-{r}.eaigc"
                    _package(source, profile, f, r, path, fp32_path, report, facts, source_record, opts, None,
                             bundle, False, lambda line: None, 0.0)
                    return bundle
                chosen, selection = choose(profile, [opts.format] if opts.format else
                                           [f for f in profile.formats if f in _buildable(source)
                                            and (opts.prune is None or f == "onnx")],
                                           built, probe, measurements, progress)
                fmt, recipe = chosen.format, chosen.recipe
                progress(f"--recipe auto, {profile.name}: {selection['winner']}, {selection['why']}")
            else:
                recipe = opts.recipe or default_recipe(source, profile, fmt)
                if recipe != (opts.recipe or profile.recipe_for(fmt, source.task)):
                    progress(f"{profile.name}: int4 rather than its {profile.recipe_for(fmt, source.task)}: "
                             f"{GGUF_4BIT_REASON} (--recipe to override)")
            (model_path, report, facts, spent), shared = artifact(profile, fmt, recipe)
            if not report.passed and not opts.allow_degraded:
                failed.append((profile.name, report))
                continue
            results.append(_package(source, profile, fmt, recipe, model_path, fp32_path, report, facts,
                                    source_record, opts, key, out, len(profiles) > 1, progress,
                                    0.0 if shared else spent, selection))
        if failed:
            lines = "; ".join(f"{name} ({r.recipe}): {', '.join(r.failures)}" for name, r in failed)
            raise FidelityError(f"fidelity gate failed for {lines}. Measured: {failed[0][1].summary()}. "
                                "Use --allow-degraded to package anyway, or --threshold KEY=VALUE")
        return results


def _prune(source: Source, fp32_path: Path, work: Path, ratio: float, progress: Progress, record: dict) -> Path:
    """The fp32 graph with ``ratio`` of its prunable channels removed and the layers after
    them reconstructed on calibration feeds; the figures go to ``record``."""
    import onnx

    with _step(progress, f"prune {ratio:.0%} of the channels") as s:
        feeds = sample_feeds(source, fp32_path, RECONSTRUCTION_SAMPLES, CALIBRATION_SEED)
        pruned, report = prune_channels(onnx.load(fp32_path), ratio, feeds)
        out = work / "pruned-fp32.onnx"
        onnx.save(pruned, out)
        s["detail"] = report.summary()
    record["pruned"] = report.to_dict()
    return out


GGUF_4BIT_REASON = ("the GGUF file holds its matrices as 4-bit blocks, which int4 keeps exactly; "
                    "another recipe would round them again (docs/converting.md)")


def default_recipe(source: Source, profile: Profile, fmt: str) -> str:
    """The profile's recipe for the task, except int4 for an ONNX LM from a GGUF file whose
    matrices are mostly Q4_0/Q4_1 blocks, unless the profile names a recipe for text itself
    (``task_recipes``): int4 keeps the blocks exactly, where the profiles' int8-dynamic
    rounds them again (SmolLM2: KL 0.0046 and three known answers lost, against 0.0001 and
    none) and fp16/fp32 store the same weights 4-8x larger."""
    recipe = profile.recipe_for(fmt, source.task)
    named = fmt == "onnx" and profile.onnx is not None and source.task in dict(profile.onnx.task_recipes)
    if fmt == "onnx" and not named and source.origin.get("gguf_4bit_share", 0) >= 0.5 \
            and source.origin.get("gguf_architecture") in SUPPORTED_ARCHITECTURES:
        return "int4"
    return recipe


def _level(opts: ConvertOptions, file_blocks: bool = False) -> int:
    """The MatMulNBits accuracy level: the option's, else 1 for a GGUF file's own 4-bit
    blocks (float32 activations) and 4 (int8 activations) for weights quantized here."""
    if opts.accuracy_level is not None:
        return opts.accuracy_level
    return 1 if file_blocks else 4


def _calibration(source: Source, fp32_path: Path, opts: ConvertOptions):
    return lambda: iter(sample_feeds(source, fp32_path, opts.calibration_samples, CALIBRATION_SEED))


def _build_onnx(source: Source, fp32_path: Path, recipe: str, reduce_range: bool,
                opts: ConvertOptions, work: Path, progress: Progress) -> tuple[Path, dict]:
    dst = _fused_lm(source, fp32_path, recipe, opts, work, progress)
    if dst is not None:
        facts = {"task_config": fused_task_config()}
        if recipe == "int4" and source.origin.get("gguf"):
            with _step(progress, "keep the GGUF file's quantized blocks") as s:
                s["detail"] = import_gguf_blocks(dst, Path(source.origin["gguf"]),
                                                 _level(opts, file_blocks=True)).summary()
    else:
        dst, facts = _quantize_dynamo(source, fp32_path, recipe, reduce_range, opts, work, progress), {}
    if recipe.startswith("int"):
        with _step(progress, "int8 embedding tables") as s:
            size = dst.stat().st_size
            tables = quantize_embeddings(dst, dst, opts.keep_float)
            s["detail"] = f"{tables} table(s), {size:,} → {dst.stat().st_size:,} bytes"
    return dst, facts


def _fused_lm(source: Source, fp32_path: Path, recipe: str, opts: ConvertOptions, work: Path,
              progress: Progress) -> Path | None:
    """The builder's graph where it applies; None (with the reason shown) to use the dynamo path."""
    if opts.lm_export != "fused" or not supports(source, recipe):
        return None
    dst = work / f"artifact-{recipe}-fused.onnx"
    with _step(progress, f"build fused LM {recipe} (onnxruntime-genai builder)") as s:
        try:
            build_fused_lm(source, recipe, dst, work, opts.block_size, _level(opts),
                           opts.keep_float if recipe != "fp32" else ())
        except ConversionError as exc:
            s["detail"] = f"not possible, using the dynamo export instead: {str(exc).splitlines()[-1].strip()}"
            return None
        s["detail"] = f"fp32 export {fp32_path.stat().st_size:,} → {dst.stat().st_size:,} bytes"
    if recipe != "fp32":
        check_kept_float(dst, opts.keep_float)
    return dst


def _quantize_dynamo(source: Source, fp32_path: Path, recipe: str, reduce_range: bool,
                     opts: ConvertOptions, work: Path, progress: Progress) -> Path:
    hints = source.quantize_hints
    qopts = QuantizeOptions(
        per_channel=opts.per_channel, reduce_range=reduce_range, op_types=hints.get("op_types"),
        block_size=opts.block_size, accuracy_level=_level(opts),
        calibration=_calibration(source, fp32_path, opts), keep_float=opts.keep_float)
    dst = work / f"artifact-{recipe}{'-rr' if reduce_range else ''}.onnx"
    with _step(progress, f"quantize {recipe}{' (reduce_range)' if reduce_range else ''}") as s:
        quantize_onnx(recipe, fp32_path, dst, qopts)
        s["detail"] = f"{fp32_path.stat().st_size:,} → {dst.stat().st_size:,} bytes"
    return dst


def _build_tflite(source: Source, fp32_path: Path, recipe: str, reduce_range: bool,
                  opts: ConvertOptions, work: Path, progress: Progress) -> tuple[Path, dict]:
    dst = work / f"artifact-{recipe}.tflite"
    with _step(progress, f"export TFLite {recipe} (litert-torch)") as s:
        facts = export_tflite(source, recipe, dst, _calibration(source, fp32_path, opts),
                              opts.keep_float if recipe != "fp32" else ())
        s["detail"] = (f"{len(facts['signatures'])} signatures, fp32 ONNX {fp32_path.stat().st_size:,} → "
                       f"{dst.stat().st_size:,} bytes")
    return dst, facts


def _validate(reference: Reference, fmt: str, recipe: str, model_path: Path, opts: ConvertOptions,
              progress: Progress, task_config: dict) -> FidelityReport:
    with _step(progress, f"validate {fmt} {recipe} vs fp32") as s:
        report = evaluate(reference, recipe, model_path, opts.thresholds, opts.allow_degraded, fmt, task_config)
        s["detail"] = (f"on {report.inputs}: {report.summary()}"
                       + ("" if report.passed else " — BELOW THRESHOLD"))
    return report


def _package(source: Source, profile: Profile, fmt: str, recipe: str, model_path: Path,
             fp32_path: Path, report: FidelityReport, facts: dict, source_record: dict, opts: ConvertOptions,
             key, out: Path, many: bool, progress: Progress, spent: float,
             selection: dict | None = None) -> ConversionResult:
    name = opts.name or source.name
    bundle = out / f"{name}-{profile.name}.eaigc" if many else out
    assets = {}
    if source.tokenizer is not None:
        assets["tokenizer.json"] = source.tokenizer.to_str().encode()
    fp32_bytes, model_bytes = fp32_path.stat().st_size, model_path.stat().st_size
    fidelity = {**report.to_dict(), "recipe": recipe, "fp32_bytes": fp32_bytes,
                "model_bytes": model_bytes, "size_ratio": round(model_bytes / fp32_bytes, 4),
                **({"keep_float": list(opts.keep_float)} if opts.keep_float and recipe != "fp32" else {}),
                **({"recipe_selection": selection} if selection else {})}
    start = time.perf_counter()
    with _step(progress, f"package {bundle.name} for {profile.name}") as s:
        task_config = {**source.task_config, **facts.get("task_config", {})}
        if "kv_cache_length" in facts:  # a fixed TFLite cache bounds the context
            task_config["max_context"] = min(int(task_config["max_context"]), facts["kv_cache_length"])
        if "signatures" in facts:
            task_config["signatures"] = facts["signatures"]
        manifest = package_bundle(bundle, name=name, version=opts.version, task=source.task,
                                  profile=profile.name, recipe=recipe, fmt=fmt, model_path=model_path,
                                  assets=assets, task_config=task_config, fidelity=fidelity,
                                  source=source_record, key=key)
        s["detail"] = "signed" if key else "unsigned"
    return ConversionResult(profile.name, fmt, recipe, bundle, manifest, fp32_bytes, model_bytes,
                            report, spent + time.perf_counter() - start)
