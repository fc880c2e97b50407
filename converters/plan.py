"""What a conversion is asked for (:class:`ConvertOptions`), and which format and recipe each
profile gets from a source, decided before anything is built."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge_aigc.contract import Format, Task
from edge_aigc.device.profiles import Profile
from edge_aigc.errors import ConversionError

from .export.lm_builder import supports
from .quantize.gguf_blocks import SUPPORTED_ARCHITECTURES
from .sources.gguf import file_recipe
from .sources.types import Source

__all__ = ["ConvertOptions", "SUPPORTED_FORMATS", "GGUF_4BIT_REASON", "buildable", "format_for", "default_recipe"]

SUPPORTED_FORMATS = ("onnx", "tflite")
GGUF_4BIT_REASON = ("the GGUF file holds its matrices as 4-bit blocks, which int4 keeps exactly; "
                    "another recipe would round them again (docs/converting.md)")


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


def buildable(source: Source) -> tuple[str, ...]:
    # TFLite is exported from PyTorch; an ONNX file has no way back there; a GGUF file is also
    # a gguf bundle's model as it is (llama.cpp runs it).
    if source.kind == "onnx":
        return ("onnx",)
    return (*SUPPORTED_FORMATS, Format.GGUF) if source.origin.get("gguf") else SUPPORTED_FORMATS


def default_recipe(source: Source, profile: Profile, fmt: str) -> str:
    """The profile's recipe for the task, except int4 for an ONNX LM from a GGUF file whose
    matrices are mostly 4-bit blocks (Q4_0, Q4_1, Q4_K), unless the profile names a recipe for text itself
    (``task_recipes``): int4 keeps the blocks exactly, where the profiles' int8-dynamic
    rounds them again (SmolLM2: KL 0.0046 and three known answers lost, against 0.0001 and
    none) and fp16/fp32 store the same weights 4-8x larger."""
    if fmt == Format.GGUF:  # the file as it is: its own blocks decide
        return file_recipe(Path(source.origin["gguf"]))
    recipe = profile.recipe_for(fmt, source.task)
    named = fmt == "onnx" and profile.onnx is not None and source.task in dict(profile.onnx.task_recipes)
    if fmt == "onnx" and not named and source.origin.get("gguf_4bit_share", 0) >= 0.5 \
            and source.origin.get("gguf_architecture") in SUPPORTED_ARCHITECTURES:
        return "int4"
    return recipe


def format_for(profile: Profile, source: Source, opts: ConvertOptions, progress: Callable[[str], None]) -> str:
    """The format to build for ``profile``: the requested one, else the profile's preferred one
    that this source can be built to (a fused-graph LM keeps ONNX; a pruned model is ONNX)."""
    can, requested = buildable(source), opts.format
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
            need = ("a gguf bundle is a GGUF file as it is" if requested == Format.GGUF else "TFLite export needs "
                    "a PyTorch factory, a Hugging Face directory or a .keras file")
            raise ConversionError(f"a {source.kind} source cannot be exported to {requested}: {need}")
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
