"""Fused LM step: a Hugging Face causal LM to ONNX through onnxruntime-genai's model builder.

The dynamo export of a Hugging Face model is correct but unfused: RMSNorm as five ops,
rotary embeddings and attention as separate MatMuls, and a ``Concat`` that copies the
whole KV cache every decode step (latency grows with position). onnxruntime-genai's
builder writes the graph ONNX Runtime's CPU/CUDA kernels are tuned for —
``GroupQueryAttention`` (rotary inside, past and present sharing one buffer),
``SkipSimplifiedLayerNormalization``, ``MatMulNBits`` for int8/int4 weights — so we use
it for the architectures it knows rather than re-deriving those fusions ourselves.

Recipes: fp32 → ``-p fp32``; int8-dynamic → ``-p int8``; int4 → ``-p int4`` (weight-only,
``block_size``/``accuracy_level`` from the conversion options, embeddings quantized too
so the artifact shrinks like the other recipes). fp16 and int8-static have no builder
equivalent on CPU and keep the dynamo path, as do architectures the builder does not
know (GPT-2, for one). The result is one self-contained ``.onnx`` file whose inputs are
``input_ids``, ``attention_mask`` and ``past_key_values.*``; the device runs it with
:class:`edge_aigc.tasks.text.shared_loop.SharedKvLoop` (task_config ``kv_layout: shared``).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from edge_aigc.contract import KV_INPUTS, KV_OUTPUTS
from edge_aigc.errors import ConversionError

from ..sources.types import Source

__all__ = ["PRECISION", "supports", "build_fused_lm", "check_kept_float", "fused_task_config"]

# our recipe -> the builder's --precision
PRECISION = {"fp32": "fp32", "int8-dynamic": "int8", "int4": "int4"}
# Checked with onnxruntime-genai 0.18; the builder rejects other architectures.
ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "OlmoForCausalLM",
    "GraniteForCausalLM", "SmolLM3ForCausalLM", "NemotronForCausalLM",
})


def supports(source: Source, recipe: str) -> bool:
    # ONNX Runtime's CPU GroupQueryAttention refuses other head sizes at run time
    # ("head_size shall be a multiple of 16"; seen with head_dim 24): those take the dynamo export.
    return (source.kind == "hf" and recipe in PRECISION
            and source.task_config.get("architecture") in ARCHITECTURES
            and source.lm is not None and source.lm.head_dim % 16 == 0)


def fused_task_config() -> dict:
    """What the package step adds to the manifest's task_config for a builder artifact."""
    return {"kv_layout": "shared", "kv_inputs": KV_INPUTS, "kv_outputs": KV_OUTPUTS}


def build_fused_lm(source: Source, recipe: str, dst: Path, work: Path, block_size: int = 32,
                   accuracy_level: int = 4, keep_float: tuple[str, ...] = ()) -> Path:
    """Run the builder on ``source.ref`` (a Hugging Face directory) and write one ``.onnx``.

    ``keep_float`` names nodes of the builder's fp32 graph (``/model/layers.3/mlp/down_proj/MatMul``,
    what ``edge-aigc debug-quant`` lists) that stay float: its ``nodes_to_exclude``."""
    import onnx

    out = work / f"builder-{recipe}"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source.ref),
           "-o", str(out), "-p", PRECISION[recipe], "-e", "cpu", "-c", str(work / "builder-cache")]
    if recipe != "fp32":
        cmd += ["--extra_options", f"block_size={block_size}", f"accuracy_level={accuracy_level}",
                "op_types_to_quantize=MatMul/Gather",
                *([f"nodes_to_exclude={','.join(keep_float)}"] if keep_float else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise ConversionError(f"cannot run onnxruntime-genai's model builder: {exc}") from None
    if proc.returncode != 0 or not (out / "model.onnx").is_file():
        if "No module named" in proc.stderr and "onnxruntime_genai" in proc.stderr:
            raise ConversionError("the fused LM export needs onnxruntime-genai: "
                                  "pip install 'edge-aigc[host]'")
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ConversionError(f"onnxruntime-genai's model builder failed on {source.ref} "
                              f"({recipe}):\n{tail}")
    model = onnx.load(str(out / "model.onnx"))  # pulls model.onnx.data back in
    if model.ByteSize() >= 2**31 - 2**20:
        raise ConversionError(f"{source.ref}: the {recipe} model is over protobuf's 2 GB limit; "
                              "bundles hold one self-contained ONNX file")
    onnx.save(model, str(dst))
    return dst


def check_kept_float(path: Path, keep_float: tuple[str, ...]) -> None:
    """The builder ignores a name it does not know: every ``keep_float`` name must be a node of
    its result at ``path`` (a quantized one is called ``NAME_Q4``/``NAME_Q8``)."""
    import onnx

    from ..quantize.recipes import require_known

    if not keep_float:
        return
    model = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in model.graph.node]
    quantized = sorted({re.sub(r"_Q\d+$", "", n.name) for n in model.graph.node
                        if n.op_type in ("MatMulNBits", "GatherBlockQuantized")})
    for name in keep_float:
        if name not in names:
            require_known((name,), quantized, "no such quantized node in the fused LM graph",
                          "edge-aigc debug-quant lists the fused graph's nodes by their error")
            raise ConversionError(f"--keep-float {name!r}: the builder quantized it all the same")
