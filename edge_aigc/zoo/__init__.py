"""The prebuilt models shipped with edge-aigc (package data), one bundle per model and profile.

Bundles are named ``<model>-<profile>.eaigc`` and signed with the key in ``zoo.pub``. They
were trained or fetched, and converted, by ``converters/zoo`` (its README says how each was
made). A portable model ships one bundle, built for the first profile it lists, that every
profile it lists runs (SmolLM2's ONNX int4 graph is the same file for each CPU: 100 MB once,
not four times).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UnknownModel

__all__ = ["ZooBundle", "zoo_dir", "zoo_bundles", "zoo_bundle", "zoo_public_key_path", "MODELS",
           "DEFAULT_PROFILES", "COMPATIBLE", "PORTABLE", "accepts"]

# name -> what it is, for listings
MODELS = {
    "fortune-gpt": "text: a 3.7M-parameter GPT-2-style decoder trained on Debian's fortunes",
    "digits": "image: a class-conditional DCGAN generator of 28x28 handwritten digits",
    "digits-vae": "image: a conditional VAE of 28x28 digits whose classes blend (morph videos)",
    "tones": "audio: a source-filter MelGAN-style generator of instrument tones from notes",
    "smollm2-135m": "text: SmolLM2-135M-Instruct (Apache-2.0), a chat model kept in its GGUF file's 4-bit blocks",
    "en_us-joe-medium": "speech: Piper's en_US-joe-medium voice (MIT, CC0 data), a VITS model kept at fp32",
}


# Bundles ship for these profiles (the small generators ≤ 52 MiB in all, tests/project/test_zoo.py). The others run the bundle of a shipped
# profile with the same arch, format and recipe; `python -m converters.zoo.build --profiles`
# builds exact ones.
DEFAULT_PROFILES = ("x86-avx2", "rpi5", "rpi4", "jetson-orin-nano")
COMPATIBLE = {"x86-avx512-vnni": "x86-avx2", "rpi-zero-2w": "rpi4"}
# model -> the profiles its one bundle serves; it is built for the first.
PORTABLE = {"smollm2-135m": ("x86-avx2", "x86-avx512-vnni", "rpi5", "rpi4", "jetson-orin-nano"),
            # fp32 everywhere: int8 fails the speech gate (docs/speech.md); one 60 MiB file
            "en_us-joe-medium": ("x86-avx2", "x86-avx512-vnni", "rpi5", "rpi4", "jetson-orin-nano")}


def accepts(profile: str, model: str = "") -> set[str]:
    """Profiles whose bundles (of ``model``) a device of ``profile`` may run."""
    found = {profile} | ({COMPATIBLE[profile]} if profile in COMPATIBLE else set())
    if profile in PORTABLE.get(model, ()):
        found.add(PORTABLE[model][0])
    return found


@dataclass(frozen=True)
class ZooBundle:
    model: str
    profile: str
    path: Path


def zoo_dir() -> Path:
    return Path(str(resources.files("edge_aigc.zoo")))


def zoo_public_key_path() -> Path:
    return zoo_dir() / "zoo.pub"


def zoo_bundles() -> list[ZooBundle]:
    found = []
    for path in sorted(zoo_dir().glob("*.eaigc")):
        # the longest name that prefixes it: digits-vae-rpi5 is digits-vae's, not digits'
        model = max((m for m in MODELS if path.stem.startswith(m + "-")), key=len, default=None)
        if model:
            found.append(ZooBundle(model, path.stem[len(model) + 1:], path))
    return found


def zoo_bundle(model: str, profile: str) -> ZooBundle:
    """The bundle of ``model`` for ``profile``, or for a compatible shipped profile."""
    for wanted in (profile, COMPATIBLE.get(profile), *(accepts(profile, model) - {profile})):
        for b in zoo_bundles():
            if b.model == model and b.profile == wanted:
                return b
    have = sorted({b.profile for b in zoo_bundles() if b.model == model})
    if model not in MODELS:
        raise UnknownModel(f"no prebuilt model {model!r} (prebuilt: {', '.join(MODELS)})")
    if not have:
        raise UnknownModel(f"prebuilt model {model!r} has no bundles in this installation ({zoo_dir()})")
    raise UnknownModel(f"prebuilt {model!r} has no bundle for profile {profile!r} (has: {', '.join(have)})")
