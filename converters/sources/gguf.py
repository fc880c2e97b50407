"""A GGUF file (llama.cpp's format) as a conversion source.

transformers reads the file (``gguf_file=``): the architecture and shape from its
metadata, the tokenizer (with its chat template and special tokens) from its
``tokenizer.*`` keys, and the weights dequantized to float32. The result is written once
as a Hugging Face directory in a cache keyed by the file's sha256 — so the fused-graph
builder, which reads directories, takes it like any other — and then loaded as an HF
source. A GGUF file holds no generation config, so ``generate()``'s own defaults apply
(greedy), with the file's EOS id.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from edge_aigc.errors import SourceError

from ..cache import cache_root
from .hf import load_hf_dir
from .types import Source, model_name

__all__ = ["load_gguf", "gguf_architecture", "gguf_cache_dir", "file_recipe"]

HOST_HINT = "GGUF sources need the host extra's gguf and accelerate: pip install -c constraints.txt -e '.[host]'"


def gguf_cache_dir() -> Path:
    """Where dequantized GGUF models are kept: ``$EDGE_AIGC_CACHE/gguf``, else ~/.cache/edge-aigc/gguf."""
    return cache_root() / "gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_architecture(path: Path) -> str:
    """The file's ``general.architecture``, checked against what transformers can load."""
    try:
        import gguf
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        raise SourceError(HOST_HINT) from None
    try:
        reader = gguf.GGUFReader(str(path))
        arch = str(reader.fields["general.architecture"].contents())
    except (KeyError, ValueError, OSError) as exc:
        raise SourceError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    known = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if arch not in known:
        raise SourceError(f"{path}: GGUF architecture {arch!r} is not one transformers can load "
                          f"(known: {', '.join(known)})")
    return arch


def _dequantize(path: Path, out: Path) -> None:
    """Write the GGUF model as a float32 Hugging Face directory at ``out`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        # transformers names the tensor type or architecture it cannot read
        raise SourceError(f"{path}: transformers cannot load this GGUF file: {exc}") from None
    # The weights are plain float32 tensors now; transformers still tags the model as
    # "quantized with gguf" and refuses to save it until the tag is dropped.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)


def load_gguf(path: Path) -> Source:
    if not path.is_file():
        raise SourceError(f"{path}: no such GGUF file")
    arch = gguf_architecture(path)
    digest = _sha256(path)
    out = gguf_cache_dir() / f"{path.stem}-{digest[:16]}"
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        _dequantize(path, out)
    source = load_hf_dir(out)
    source.name = model_name(path.name.split(".")[0])  # SmolLM2-135M-Instruct.Q4_1.gguf -> smollm2-135m-instruct
    source.origin = {"gguf": str(path), "gguf_sha256": digest, "gguf_architecture": arch,
                     "gguf_4bit_share": round(_four_bit_share(path), 4)}
    return source


def _four_bit_share(path: Path) -> float:
    """The share of the file's matrix weights held in 4-bit blocks int4 keeps exactly (Q4_0, Q4_1, Q4_K)."""
    import gguf

    kinds = gguf.GGMLQuantizationType
    matrices = [t for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) == 2]
    total = sum(int(t.n_elements) for t in matrices)
    four = sum(int(t.n_elements) for t in matrices if t.tensor_type in (kinds.Q4_0, kinds.Q4_1, kinds.Q4_K))
    return four / total if total else 0.0


def file_recipe(path: Path) -> str:
    """What a GGUF file's matrices are, as the recipe its gate grades: most of their weights in
    4-bit or smaller blocks (Q4_*, Q3_K, Q2_K, IQ*) is int4, in 5- to 8-bit blocks (Q5_*, Q6_K,
    Q8_0) int8-dynamic's bounds, float16 fp16, float32 fp32."""
    import gguf

    by_bits: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if len(t.shape) == 2:
            kind = t.tensor_type.name
            recipe = ("fp32" if kind == "F32" else "fp16" if kind in ("F16", "BF16")
                      else "int8-dynamic" if kind.startswith(("Q5", "Q6", "Q8")) else "int4")
            by_bits[recipe] = by_bits.get(recipe, 0) + int(t.n_elements)
    return max(by_bits, key=by_bits.get) if by_bits else "fp32"
