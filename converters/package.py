"""Package step: the converted model, its task assets and a manifest into a ``.eaigc`` bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_aigc.bundle import pack_bundle
from edge_aigc.manifest import Manifest

__all__ = ["model_io", "package_bundle"]


def model_io(model_path: Path) -> dict[str, Any]:
    """Input/output names, element types and shapes (symbolic dims as names), as the runtime sees them."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def describe(args):
        return {a.name: {"dtype": a.type.removeprefix("tensor(").removesuffix(")"),
                         "shape": [d if isinstance(d, (int, str)) else None for d in a.shape]}
                for a in args}

    return {"inputs": describe(sess.get_inputs()), "outputs": describe(sess.get_outputs())}


def package_bundle(out: Path, *, name: str, version: str, task: str, profile: str, recipe: str,
                   model_path: Path, assets: dict[str, Path | bytes], task_config: dict[str, Any],
                   fidelity: dict[str, Any], source: dict[str, Any],
                   key: Ed25519PrivateKey | None = None) -> Manifest:
    files: dict[str, Path | bytes] = {"model.onnx": model_path, **assets}
    meta = {"name": name, "version": version, "task": task, "format": "onnx", "profile": profile,
            "recipe": recipe, "io": model_io(model_path),
            "task_config": {**task_config, "model": "model.onnx"},
            "fidelity": fidelity, "source": source}
    out.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(out, meta, files, key=key)
