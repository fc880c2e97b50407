"""Test helpers, a package: tiny models and voices the tests build, running services, OTA
helpers. Factory references name them as users name theirs (``tests.helpers.tiny_models:tiny_dcgan``)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the checkout
RPI5 = (ROOT / "device_profiles" / "rpi5.toml").read_text()


def recipe_profile(tmp_path: Path, recipe: str) -> Path:
    """rpi5 with another recipe: lets one export serve all recipes."""
    name = f"rpi5-{recipe}"
    text = RPI5.replace('name = "rpi5"', f'name = "{name}"').replace(
        'recipe = "int8-dynamic"', f'recipe = "{recipe}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


MODEL_BYTES = bytes(range(256)) * 64  # 16 KiB stands in for weights; hashes don't care


def bundle_meta(name: str = "tiny-gen", version: str = "1.0.0", **extra) -> dict:
    return {"name": name, "version": version, "task": "image-generation", "format": "onnx",
            "profile": "x86-avx2", "recipe": "fp32",
            "task_config": {"image_size": [8, 8], "class_labels": ["a", "b"]},
            "io": {"inputs": {"z": {"dtype": "float32", "shape": [1, 4]}}}, **extra}
