"""A GGUF file re-quantized by llama.cpp's own quantizer (``llama-quantize``, through
llama-cpp-python's ``llama_model_quantize``), for a gguf bundle of another recipe than the
file holds.

Each recipe maps to the llama.cpp type a device runs best: Q4_0 for int4 (llama.cpp repacks
Q4_0 for ARM's dotprod/i8mm and x86's AVX2 kernels when it loads it, and Q4_0 is what its
ARM guidance names), Q8_0 for int8-dynamic, F16 and F32 for the float recipes. llama.cpp
keeps its own per-tensor choices (the token embedding and output tensor may stay wider), and
the quantizer reads and writes tensor by tensor, so its memory is about one tensor's.
"""
from __future__ import annotations

from pathlib import Path

from edge_aigc.errors import ConversionError

__all__ = ["LLAMA_TYPES", "requantize", "quantize_to"]

LLAMA_TYPES = {"int4": "Q4_0", "int8-dynamic": "Q8_0", "fp16": "F16", "fp32": "F32"}
# llama.cpp's file types by the name llama-quantize takes (K-quant mixes for the benchmarks)
_FTYPES = {"Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "F16": "LLAMA_FTYPE_MOSTLY_F16",
           "F32": "LLAMA_FTYPE_ALL_F32", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
           "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K"}


def requantize(src: Path, dst: Path, recipe: str, threads: int) -> str:
    """``src`` written to ``dst`` as ``recipe``'s llama.cpp type; returns the type's name."""
    if recipe not in LLAMA_TYPES:
        raise ConversionError(f"--format gguf has no llama.cpp type for recipe {recipe!r} "
                              f"(known: {', '.join(LLAMA_TYPES)})")
    return quantize_to(src, dst, LLAMA_TYPES[recipe], threads)


def quantize_to(src: Path, dst: Path, kind: str, threads: int) -> str:
    """``src`` written to ``dst`` as llama.cpp file type ``kind`` (``Q4_K_M``, ``Q8_0``, …)."""
    from edge_aigc.backends.llamacpp import llama

    lib = llama()
    params = lib.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = getattr(lib, _FTYPES[kind])
    params.allow_requantize = True  # a quantized file is rounded again: the gate grades the result
    if lib.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise ConversionError(f"llama.cpp's quantizer could not write {kind} from {src.name}")
    return kind
