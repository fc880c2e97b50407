"""The conversion pipeline: source → export → optimize → quantize → validate → package.

A :class:`Conversion` holds one conversion's state (the source, its fp32 reference, the
options, the work directory, progress); its steps are methods, so a new option is read where it
is used instead of being threaded through every step. Export and optimize run once; an
:class:`Artifact` (a format and recipe's model, gated) is built once and shared by the profiles
that want it, so ``--profile all`` does not redo work; packaging runs per profile. Every step
reports through ``progress`` with its time. (The shape is llama.cpp's ``convert_hf_to_gguf``
``ModelBase``: one object holds the conversion, the steps are its methods.)
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from edge_aigc.bundle import signing
from edge_aigc.bundle.manifest import Manifest
from edge_aigc.contract import Format
from edge_aigc.device.profiles import RECIPES, Profile
from edge_aigc.device.system import fit_threads
from edge_aigc.errors import ConversionError, FidelityError

from .export.lm_builder import build_fused_lm, check_kept_float, fused_task_config, supports
from .export.onnx import OPSET, export_onnx
from .export.optimize import optimize_onnx
from .export.tflite import export_tflite
from .gate.calibration import CALIBRATION_SEED
from .gate.recipe_auto import choose, load_measurements
from .gate.specs import sample_feeds
from .gate.validate import FidelityReport, Reference, evaluate
from .package import package_bundle
from .plan import GGUF_4BIT_REASON, SUPPORTED_FORMATS, ConvertOptions, buildable, default_recipe, format_for
from .quantize.embedding import quantize_embeddings
from .quantize.gguf_blocks import import_gguf_blocks
from .quantize.llama_quantize import LLAMA_TYPES, requantize
from .quantize.prune import RECONSTRUCTION_SAMPLES, prune_channels
from .quantize.recipes import QuantizeOptions, quantize_onnx
from .sources.gguf import file_recipe
from .sources.load import Source, load_source

__all__ = ["ConvertOptions", "ConversionResult", "Conversion", "Artifact", "convert", "SUPPORTED_FORMATS",
           "default_recipe"]

AUTO = "auto"  # the recipe that means: build, gate and measure every candidate (gate/recipe_auto.py)
Progress = Callable[[str], None]


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


@dataclass
class Artifact:
    """One built and gated model. ``task_config`` is what the build adds to the source's (the
    fused graph's layout); a TFLite build also says its ``signatures`` and any fixed KV cache."""

    format: str
    recipe: str
    path: Path
    report: FidelityReport | None = None
    task_config: dict[str, Any] = field(default_factory=dict)
    signatures: list[str] | None = None
    kv_cache_length: int | None = None
    seconds: float = 0.0

    def config(self, source: Source) -> dict[str, Any]:
        """The bundle's task_config: the source's, with what this build knows."""
        config = {**source.task_config, **self.task_config}
        if self.kv_cache_length is not None:  # a fixed TFLite cache bounds the context
            config["max_context"] = min(int(config["max_context"]), self.kv_cache_length)
        if self.signatures is not None:
            config["signatures"] = self.signatures
        return config


@contextmanager
def _step(progress: Progress, label: str) -> Iterator[dict]:
    info: dict = {}
    start = time.perf_counter()
    progress(f"{label} …")
    yield info
    detail = f" ({info['detail']})" if info.get("detail") else ""
    progress(f"{label} done in {time.perf_counter() - start:.1f} s{detail}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Conversion:
    """One source on its way to bundles: loaded, exported to the fp32 reference (and pruned),
    then an artifact per format and recipe the profiles ask for."""

    def __init__(self, source_ref: str | Path | Source, opts: ConvertOptions, work: Path, progress: Progress):
        self.opts, self.work, self.progress = opts, work, progress
        self.key = signing.load_private_key(opts.sign_key) if opts.sign_key else None
        with _step(progress, "load source") as s:
            self.source = source_ref if isinstance(source_ref, Source) else load_source(source_ref)
            s["detail"] = f"{self.source.kind}, {self.source.task}"
        self._artifacts: dict[tuple, Artifact] = {}

    def step(self, label: str):
        return _step(self.progress, label)

    # -- once per conversion --------------------------------------------------------------
    def export(self) -> None:
        """The fp32 reference every artifact is graded against (the unpruned model, always),
        and what the bundles record of it."""
        with self.step(f"export ONNX (dynamo, opset {OPSET})") as s:
            exported = export_onnx(self.source, self.work / "exported.onnx")
            if exported.max_abs_diff is not None:
                s["detail"] = f"max |onnx - torch| = {exported.max_abs_diff:.2g}"
        with self.step("optimize (onnxslim)") as s:
            optimized = optimize_onnx(exported.path, self.work / "reference-fp32.onnx")
            s["detail"] = optimized.note or f"{optimized.nodes_before} → {optimized.nodes_after} nodes"
        self.fp32_path = self.build_from = optimized.path
        self.reference = Reference(self.source, self.fp32_path, self.opts.validation_samples)
        self.source_record = {"kind": self.source.kind, "ref": self.source.ref, "fp32_sha256": _sha256(self.fp32_path),
                              "opset": OPSET, "export_max_abs_diff": exported.max_abs_diff, **self.source.origin}
        if self.opts.prune is not None:
            self.build_from = self._prune(self.opts.prune)

    def _prune(self, ratio: float) -> Path:
        """The fp32 graph with ``ratio`` of its prunable channels removed and the layers after
        them reconstructed on calibration feeds; the figures go to the source record."""
        import onnx

        with self.step(f"prune {ratio:.0%} of the channels") as s:
            feeds = sample_feeds(self.source, self.fp32_path, RECONSTRUCTION_SAMPLES, CALIBRATION_SEED)
            pruned, report = prune_channels(onnx.load(self.fp32_path), ratio, feeds)
            out = self.work / "pruned-fp32.onnx"
            onnx.save(pruned, out)
            s["detail"] = report.summary()
        self.source_record["pruned"] = report.to_dict()
        return out

    # -- artifacts ------------------------------------------------------------------------
    def artifact(self, profile: Profile, fmt: str, recipe: str) -> tuple[Artifact, bool]:
        """Built and gated once per (format, recipe, reduce_range); True when built before."""
        # reduce_range changes only ONNX int8 weights; other recipes share one artifact.
        reduce_range = fmt == "onnx" and recipe.startswith("int8") and bool(profile.onnx and profile.onnx.reduce_range)
        key = (fmt, recipe, reduce_range)
        if key in self._artifacts:
            return self._artifacts[key], True
        start = time.perf_counter()
        build = {"onnx": lambda: self._build_onnx(recipe, reduce_range), "tflite": lambda: self._build_tflite(recipe),
                 Format.GGUF: lambda: self._build_gguf(recipe)}[fmt]
        made = build()
        made.report = self._validate(made)
        made.seconds = time.perf_counter() - start
        self._artifacts[key] = made
        return made, False

    def _level(self, file_blocks: bool = False) -> int:
        """The MatMulNBits accuracy level: the option's, else 1 for a GGUF file's own 4-bit
        blocks (float32 activations) and 4 (int8 activations) for weights quantized here."""
        if self.opts.accuracy_level is not None:
            return self.opts.accuracy_level
        return 1 if file_blocks else 4

    def _calibration(self):
        return lambda: iter(sample_feeds(self.source, self.fp32_path, self.opts.calibration_samples, CALIBRATION_SEED))

    def _build_onnx(self, recipe: str, reduce_range: bool) -> Artifact:
        made = self._fused_lm(recipe)
        if made is not None and recipe == "int4" and self.source.origin.get("gguf"):
            with self.step("keep the GGUF file's quantized blocks") as s:
                s["detail"] = import_gguf_blocks(made.path, Path(self.source.origin["gguf"]),
                                                 self._level(file_blocks=True)).summary()
        made = made or self._quantize(recipe, reduce_range)
        if recipe.startswith("int"):
            with self.step("int8 embedding tables") as s:
                size = made.path.stat().st_size
                tables = quantize_embeddings(made.path, made.path, self.opts.keep_float)
                s["detail"] = f"{tables} table(s), {size:,} → {made.path.stat().st_size:,} bytes"
        return made

    def _fused_lm(self, recipe: str) -> Artifact | None:
        """The builder's graph where it applies; None (with the reason shown) to use the dynamo path."""
        if self.opts.lm_export != "fused" or not supports(self.source, recipe):
            return None
        dst = self.work / f"artifact-{recipe}-fused.onnx"
        keep = self.opts.keep_float if recipe != "fp32" else ()
        with self.step(f"build fused LM {recipe} (onnxruntime-genai builder)") as s:
            try:
                build_fused_lm(self.source, recipe, dst, self.work, self.opts.block_size, self._level(), keep)
            except ConversionError as exc:
                s["detail"] = f"not possible, using the dynamo export instead: {str(exc).splitlines()[-1].strip()}"
                return None
            s["detail"] = f"fp32 export {self.fp32_path.stat().st_size:,} → {dst.stat().st_size:,} bytes"
        check_kept_float(dst, keep)
        return Artifact("onnx", recipe, dst, task_config=fused_task_config())

    def _quantize(self, recipe: str, reduce_range: bool) -> Artifact:
        opts = self.opts
        qopts = QuantizeOptions(
            per_channel=opts.per_channel, reduce_range=reduce_range, op_types=self.source.quantize_hints.get("op_types"),
            block_size=opts.block_size, accuracy_level=self._level(), calibration=self._calibration(),
            keep_float=opts.keep_float)
        dst = self.work / f"artifact-{recipe}{'-rr' if reduce_range else ''}.onnx"
        with self.step(f"quantize {recipe}{' (reduce_range)' if reduce_range else ''}") as s:
            quantize_onnx(recipe, self.build_from, dst, qopts)
            s["detail"] = f"{self.build_from.stat().st_size:,} → {dst.stat().st_size:,} bytes"
        return Artifact("onnx", recipe, dst)

    def _build_tflite(self, recipe: str) -> Artifact:
        dst = self.work / f"artifact-{recipe}.tflite"
        with self.step(f"export TFLite {recipe} (litert-torch)") as s:
            facts = export_tflite(self.source, recipe, dst, self._calibration(),
                                  self.opts.keep_float if recipe != "fp32" else ())
            s["detail"] = (f"{len(facts['signatures'])} signatures, fp32 ONNX {self.fp32_path.stat().st_size:,} → "
                           f"{dst.stat().st_size:,} bytes")
        return Artifact("tflite", recipe, dst, signatures=facts["signatures"],
                        kv_cache_length=facts.get("kv_cache_length"))

    def _build_gguf(self, recipe: str) -> Artifact:
        """The GGUF file as it is when it holds ``recipe``, else re-quantized by llama.cpp's own
        quantizer (converters/quantize/llama_quantize.py); llama.cpp runs either."""
        gguf = Path(self.source.origin["gguf"])
        held, dst = file_recipe(gguf), self.work / "artifact.gguf"
        if recipe == held:
            with self.step(f"gguf {recipe}: the file as it is (llama.cpp)") as s:
                shutil.copyfile(gguf, dst)
                s["detail"] = f"{dst.stat().st_size:,} bytes"
        else:
            with self.step(f"gguf {recipe}: llama.cpp's quantizer ({LLAMA_TYPES.get(recipe, '?')}) "
                           f"from the file's {held}") as s:
                kind = requantize(gguf, dst, recipe, fit_threads(None).threads)
                s["detail"] = f"{kind}, {dst.stat().st_size:,} bytes from {gguf.stat().st_size:,}"
        return Artifact(Format.GGUF, recipe, dst)

    def _validate(self, made: Artifact) -> FidelityReport:
        with self.step(f"validate {made.format} {made.recipe} vs fp32") as s:
            report = evaluate(self.reference, made.recipe, made.path, self.opts.thresholds, self.opts.allow_degraded,
                              made.format, {**self.source.task_config, **made.task_config})
            s["detail"] = f"on {report.inputs}: {report.summary()}" + ("" if report.passed else " — BELOW THRESHOLD")
        return report

    # -- per profile ----------------------------------------------------------------------
    def choose(self, profile: Profile, fmt: str, measurements: dict) -> tuple[str, str, dict | None]:
        """The format and recipe for ``profile`` (``--recipe auto``: the fastest candidate that
        passes, with the record of the choice)."""
        opts = self.opts
        if opts.recipe != AUTO:
            recipe = opts.recipe or default_recipe(self.source, profile, fmt)
            if fmt != Format.GGUF and recipe != (opts.recipe or profile.recipe_for(fmt, self.source.task)):
                self.progress(f"{profile.name}: int4 rather than its {profile.recipe_for(fmt, self.source.task)}: "
                              f"{GGUF_4BIT_REASON} (--recipe to override)")
            return fmt, recipe, None
        formats = [opts.format] if opts.format else [f for f in profile.formats if f in buildable(self.source)
                                                     and (opts.prune is None or f == "onnx")]
        chosen, selection = choose(profile, formats, self, measurements, self.progress)
        self.progress(f"--recipe auto, {profile.name}: {selection['winner']}, {selection['why']}")
        return chosen.format, chosen.recipe, selection

    def built(self, profile: Profile, fmt: str, recipe: str) -> tuple[Path, FidelityReport, int]:
        """A candidate for ``--recipe auto``: its model, gate report and size."""
        made, _ = self.artifact(profile, fmt, recipe)
        return made.path, made.report, made.path.stat().st_size

    def probe(self, profile: Profile, fmt: str, recipe: str) -> Path:
        """A candidate packaged unsigned in the work directory, for measuring on this host."""
        made, _ = self.artifact(profile, fmt, recipe)
        bundle = self.work / f"probe-{profile.name}-{fmt}-{recipe}.eaigc"
        self.package(profile, made, bundle, key=None, quiet=True)
        return bundle

    def package(self, profile: Profile, made: Artifact, bundle: Path, key: Any, spent: float = 0.0,
                selection: dict | None = None, quiet: bool = False) -> ConversionResult:
        source, opts = self.source, self.opts
        name = opts.name or source.name
        assets = {"tokenizer.json": source.tokenizer.to_str().encode()} if source.tokenizer is not None else {}
        fp32_bytes, model_bytes = self.fp32_path.stat().st_size, made.path.stat().st_size
        fidelity = {**made.report.to_dict(), "recipe": made.recipe, "fp32_bytes": fp32_bytes,
                    "model_bytes": model_bytes, "size_ratio": round(model_bytes / fp32_bytes, 4),
                    **({"keep_float": list(opts.keep_float)} if opts.keep_float and made.recipe != "fp32" else {}),
                    **({"recipe_selection": selection} if selection else {})}
        start = time.perf_counter()
        with _step((lambda line: None) if quiet else self.progress, f"package {bundle.name} for {profile.name}") as s:
            manifest = package_bundle(bundle, name=name, version=opts.version, task=source.task,
                                      profile=profile.name, recipe=made.recipe, fmt=made.format, model_path=made.path,
                                      assets=assets, task_config=made.config(source), fidelity=fidelity,
                                      source=self.source_record, key=key)
            s["detail"] = "signed" if key else "unsigned"
        return ConversionResult(profile.name, made.format, made.recipe, bundle, manifest, fp32_bytes, model_bytes,
                                made.report, spent + time.perf_counter() - start)


def _check(opts: ConvertOptions) -> None:
    if opts.lm_export not in ("fused", "dynamo"):
        raise ConversionError(f"unknown LM export {opts.lm_export!r}; choose fused or dynamo")
    if opts.recipe is not None and opts.recipe not in RECIPES and opts.recipe != AUTO:
        raise ConversionError(f"unknown recipe {opts.recipe!r}; choose one of {', '.join(RECIPES)} or {AUTO}")


def convert(source_ref: str | Path | Source, profiles: list[Profile], out: Path,
            options: ConvertOptions | None = None,
            progress: Progress = lambda line: None) -> list[ConversionResult]:
    """Convert once for each profile. ``out`` is the bundle path for one profile, a directory for several.

    Raises FidelityError (after writing the bundles that passed) if any profile's
    artifact fails the gate and ``allow_degraded`` is off.
    """
    opts = options or ConvertOptions()
    _check(opts)
    measurements = load_measurements(list(opts.measurements)) if opts.recipe == AUTO else {}
    with tempfile.TemporaryDirectory(prefix="edge-aigc-convert-") as tmp:
        conversion = Conversion(source_ref, opts, Path(tmp), progress)
        formats = {p.name: format_for(p, conversion.source, opts, progress) for p in profiles}  # fail fast
        conversion.export()
        results, failed = [], []
        for profile in profiles:
            fmt, recipe, selection = conversion.choose(profile, formats[profile.name], measurements)
            made, shared = conversion.artifact(profile, fmt, recipe)
            if not made.report.passed and not opts.allow_degraded:
                failed.append((profile.name, made.report))
                continue
            name = opts.name or conversion.source.name
            bundle = out / f"{name}-{profile.name}.eaigc" if len(profiles) > 1 else out
            results.append(conversion.package(profile, made, bundle, conversion.key,
                                              0.0 if shared else made.seconds, selection))
        if failed:
            lines = "; ".join(f"{name} ({r.recipe}): {', '.join(r.failures)}" for name, r in failed)
            raise FidelityError(f"fidelity gate failed for {lines}. Measured: {failed[0][1].summary()}. "
                                "Use --allow-degraded to package anyway, or --threshold KEY=VALUE")
        return results
