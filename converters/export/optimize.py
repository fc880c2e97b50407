"""Optimize step: onnxslim graph simplification (constant folding, dead nodes, fusions).

Runs before quantization so the quantizers see the simplified graph. onnxslim keeps
inputs, outputs and numerics; if it fails on an unusual graph the step keeps the
exported model and says why, rather than failing the conversion.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OptimizeResult", "optimize_onnx"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeResult:
    path: Path
    nodes_before: int
    nodes_after: int
    note: str = ""


def optimize_onnx(src: Path, dst: Path) -> OptimizeResult:
    import onnx
    import onnxslim

    model = onnx.load(str(src))
    before = len(model.graph.node)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        log.warning("onnxslim failed (%s); keeping the exported graph", exc)
        shutil.copyfile(src, dst)
        return OptimizeResult(dst, before, before, f"onnxslim skipped: {exc}")
    onnx.save(slim, str(dst))
    return OptimizeResult(dst, before, len(slim.graph.node))
