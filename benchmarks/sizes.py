"""Size and fidelity per recipe, read from the manifests of the bundles the benchmarks built."""
from __future__ import annotations

from pathlib import Path

from .common import Report

__all__ = ["size_table"]


def size_table(bundles: list[Path]) -> tuple[Report, dict]:
    from edge_aigc import load_bundle

    report = Report("Size and fidelity per recipe (from the bundle manifests; ratio vs the fp32 ONNX export)",
                    ["model", "format", "recipe", "model bytes", "vs fp32 ONNX", "fidelity", "gate"])
    data = []
    for path in sorted(bundles):
        with load_bundle(path) as b:
            m = b.manifest
            fid = m.fidelity
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in fid.get("metrics", {}).items())
            report.add(m.name, m.format, m.recipe, f"{fid['model_bytes']:,}", f"{fid['size_ratio']:.2f}x",
                       metrics, "passed" if fid.get("passed") else "FAILED (degraded)")
            data.append({"model": m.name, "format": m.format, "recipe": m.recipe, **fid})
    return report, {"bundles": data}
