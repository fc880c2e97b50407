"""Convert the trained zoo models into the signed bundles shipped in ``edge_aigc/zoo/``.

Each model goes through the same pipeline as any user model (``edge-aigc convert``), once
per profile, with the fidelity gate. The signing key's public half is written to
``edge_aigc/zoo/zoo.pub``; the private key stays with whoever builds releases.

    python -m converters.zoo.build --sign release.key [--models digits,tones] [--profiles rpi5,x86-avx2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from edge_aigc import signing
from edge_aigc.profiles import get_profile
from edge_aigc.zoo import DEFAULT_PROFILES, zoo_dir

from ..pipeline import ConvertOptions, convert
from .text import ARTIFACTS

SOURCES = {
    "fortune-gpt": str(ARTIFACTS / "fortune-gpt"),
    "digits": "converters.zoo.image:factory",
    "tones": "converters.zoo.audio:factory",
}
VERSION = "1.0.0"


def build(models: list[str], profile_names: list[str], key_path: Path, out: Path) -> list:
    profiles = [get_profile(p) for p in profile_names or DEFAULT_PROFILES]
    results = []
    for model in models:
        print(f"== {model} for {', '.join(p.name for p in profiles)}", file=sys.stderr, flush=True)
        stage = out / ".staging"
        stage.mkdir(parents=True, exist_ok=True)
        results += convert(SOURCES[model], profiles, stage if len(profiles) > 1 else stage / f"{model}-{profiles[0].name}.eaigc",
                           ConvertOptions(name=model, version=VERSION, sign_key=key_path),
                           progress=lambda line: print(f"   {line}", file=sys.stderr, flush=True))
        for bundle in stage.glob("*.eaigc"):
            shutil.move(str(bundle), out / bundle.name)
        stage.rmdir()
    pub = signing.load_private_key(key_path).public_key()
    from cryptography.hazmat.primitives import serialization

    (out / "zoo.pub").write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sign", type=Path, required=True, help="Ed25519 private key (edge-aigc keygen)")
    parser.add_argument("--models", default=",".join(SOURCES))
    parser.add_argument("--profiles", default="", help="comma-separated (default: the shipped set, "
                                                       f"{','.join(DEFAULT_PROFILES)})")
    parser.add_argument("--out", type=Path, default=zoo_dir())
    args = parser.parse_args()
    results = build([m for m in args.models.split(",") if m], [p for p in args.profiles.split(",") if p],
                    args.sign, args.out)
    for r in results:
        print(f"{r.bundle.name:40} {r.recipe:13} {r.model_bytes:>10,} B  {r.fidelity.summary()}")
    total = sum(p.stat().st_size for p in args.out.glob("*.eaigc"))
    print(f"total shipped: {total / 2**20:.1f} MiB in {len(list(args.out.glob('*.eaigc')))} bundles")


if __name__ == "__main__":
    main()
