"""What the LM gate's bounds rest on: how far llama.cpp's own types, and a second float
implementation, land from the float reference on the gate's own text and questions.

    edge-aigc bench --only gate-noise

The reference is the gate's: SmolLM2-135M-Instruct's GGUF file dequantized to float32 and
run by ONNX Runtime. Each candidate is that file written by llama.cpp's quantizer
(``llama_model_quantize``) and run by llama.cpp through the kit's decode loop: F32 (the
same weights, another float implementation: its differences are the float noise a CPU,
a thread count or a kernel choice makes), Q8_0, Q6_K, Q4_K_M and Q4_0. Every candidate is
measured by ``converters.gate.validate.evaluate``, exactly as ``convert`` gates an artifact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Report

__all__ = ["bench_gate_noise", "KINDS"]

# llama.cpp type -> the recipe whose bounds it is graded by
KINDS = {"F32": "fp32", "Q8_0": "int8-dynamic", "Q6_K": "int8-dynamic", "Q4_K_M": "int4", "Q4_0": "int4"}


def bench_gate_noise(work: Path, progress=print) -> tuple[Report, dict]:
    from converters import ConvertOptions
    from converters.gate.validate import evaluate
    from converters.pipeline import Conversion
    from converters.quantize.llama_quantize import quantize_to
    from converters.zoo.smollm2 import gguf_path
    from edge_aigc.device.system import fit_threads

    (work / "gate-noise").mkdir(parents=True, exist_ok=True)
    source = gguf_path(progress)
    conversion = Conversion(str(source), ConvertOptions(), work / "gate-noise", progress)
    conversion.export()
    report = Report("The LM gate on llama.cpp's own types — SmolLM2-135M-Instruct (Q4_1 file) against its "
                    "float32 reference on ONNX Runtime",
                    ["llama.cpp type", "bytes", "ppl ratio", "mean KL", "greedy agreement", "answers right",
                     "answers kept", "gate"])
    data: dict[str, Any] = {}
    for kind, recipe in KINDS.items():
        path = work / f"smollm2-{kind}.gguf"
        if not path.is_file():
            progress(f"llama.cpp quantizer: {kind}")
            quantize_to(source, path, kind, fit_threads(None).threads)
        progress(f"gate: {kind} (graded as {recipe})")
        result = evaluate(conversion.reference, recipe, path, allow_degraded=True, fmt="gguf")
        m = result.metrics
        data[kind] = {"bytes": path.stat().st_size, "recipe": recipe, **m, "failures": result.failures}
        report.add(kind, path.stat().st_size, m["ppl_ratio"], m["mean_kl"], m["greedy_agreement"],
                   int(m["answers_right"]), m["answers_kept"], "pass" if not result.failures else
                   "; ".join(result.failures))
    for _, run in conversion.reference._text.values():   # the float reference's own run (one context)
        report.notes.append(f"The float32 reference answers {sum(run.right)} of {len(run.right)} questions right; "
                            "answers kept is the share of those the candidate still answers right.")
        data["reference_right"] = int(sum(run.right))
    return report, data
