"""Package step: the converted model, its task assets and a manifest into a ``.eaigc`` bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_aigc.contract import model_file
from edge_aigc.bundle.load import pack_bundle
from edge_aigc.bundle.manifest import Manifest

__all__ = ["model_io", "package_bundle"]


def model_io(model_path: Path, fmt: str = "onnx") -> dict[str, Any]:
    """Input/output names, element types and shapes as the device's backend reports them
    (ONNX symbolic dims as names; TFLite axes that differ between signatures as null)."""
    from edge_aigc.backends import open_session

    session = open_session(fmt, model_path, None, model_path.stem)

    def describe(args):
        return {a.name: {"dtype": a.dtype, "shape": [d if isinstance(d, (int, str)) else None for d in a.shape]}
                for a in args}

    return {"inputs": describe(session.inputs), "outputs": describe(session.outputs)}


def package_bundle(out: Path, *, name: str, version: str, task: str, profile: str, recipe: str,
                   model_path: Path, fmt: str = "onnx", assets: dict[str, Path | bytes], task_config: dict[str, Any],
                   fidelity: dict[str, Any], source: dict[str, Any],
                   key: Ed25519PrivateKey | None = None) -> Manifest:
    files: dict[str, Path | bytes] = {model_file(fmt): model_path, **assets}
    meta = {"name": name, "version": version, "task": task, "format": fmt, "profile": profile,
            "recipe": recipe, "io": model_io(model_path, fmt),
            "task_config": {**task_config, "model": model_file(fmt)},
            "fidelity": fidelity, "source": source}
    out.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(out, meta, files, key=key)
