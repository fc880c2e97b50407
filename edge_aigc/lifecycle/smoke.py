"""The checks a device runs on a bundle before it serves it: a smoke generation and a
fidelity spot check.

An install over the air (lifecycle/ota/) calls :func:`check_bundle` on the installed,
not yet active version. It opens the bundle in a runtime of its own (the serving one is
untouched), generates one small output of the bundle's task twice with the same seed, and
refuses the bundle, naming the step, when:

- ``smoke``: the model does not load or run, or its output is empty or degenerate (a
  blank image, silent audio, no text);
- ``fidelity``: the manifest records a fidelity gate the bundle did not pass (packaged with
  ``--allow-degraded``), or the same seed gave two different outputs on this device.

Bundles carry their gate's figures, not reference outputs, so the spot check cannot
re-measure PSNR on the device; it checks what the device can know.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import EdgeAigcError, Rejected
from ..bundle.manifest import Manifest
from ..device.profiles import Profile
from ..runtime.runtime import Runtime
from ..tasks.base import Result
from ..tasks.spec import get_spec

__all__ = ["check_bundle"]


def check_bundle(path: str | os.PathLike, manifest: Manifest, profile: Profile | None,
                 threads: int | None = None) -> dict[str, Any]:
    """Raise :class:`Rejected` (step ``smoke`` or ``fidelity``) or return what was measured."""
    gate = manifest.fidelity
    if gate and (gate.get("passed") is False or gate.get("degraded")):
        failures = "; ".join(map(str, gate.get("failures", []))) or "no details recorded"
        raise Rejected("fidelity", f"{manifest.name} {manifest.version} was packaged below its fidelity "
                                   f"gate ({failures})")
    spec = get_spec(manifest.task)  # its smoke request, and what a degenerate output is
    params = dict(spec.smoke)
    try:
        with Runtime([path], profile, threads=threads) as rt:
            first = rt.generate(manifest.name, **params)
            second = rt.generate(manifest.name, **params)
    except EdgeAigcError as exc:
        raise Rejected("smoke", f"{manifest.name} {manifest.version} failed to generate: {exc}") from None
    except Exception as exc:  # a runtime fault inside the model (ORT, LiteRT) is the bundle's
        raise Rejected("smoke", f"{manifest.name} {manifest.version} failed to generate "
                                f"({type(exc).__name__})") from None
    why = spec.degenerate(first)
    if why:
        raise Rejected("smoke", f"{manifest.name} {manifest.version}: {why}")
    if _fingerprint(first) != _fingerprint(second):
        raise Rejected("fidelity", f"{manifest.name} {manifest.version}: the same seeded request gave two "
                                   "different outputs on this device")
    return {"params": params, "seconds": first.meta.get("seconds")}


def _fingerprint(result: Result) -> tuple:
    return (result.text, tuple(out.data for out in result.outputs))
