"""The Raspberry Pi path under emulation: tests/arm64/run.sh in an arm64 Debian root.

Off unless ``EDGE_AIGC_ARM64=1`` (it needs root, debootstrap, qemu-user-static and
binfmt-support, and takes ~10 minutes the first time; see docs/deploy.md).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from converters import ConvertOptions, convert
from edge_aigc import zoo
from edge_aigc.device.profiles import get_profile
from tests.helpers import ROOT

RUN = ROOT / "tests" / "arm64" / "run.sh"
DIGITS = ROOT / "converters" / "zoo" / "artifacts" / "digits-dcgan.keras"

pytestmark = [pytest.mark.arm64, pytest.mark.skipif(
    os.environ.get("EDGE_AIGC_ARM64") != "1", reason="arm64 emulation runs with EDGE_AIGC_ARM64=1")]


def test_device_runtime_and_service_pass_on_emulated_arm64(broker, tmp_path):
    # Besides the rpi5 zoo bundles (ONNX, int8): a TFLite bundle, for LiteRT on arm64.
    extra = tmp_path / "extra"
    convert(str(DIGITS), [get_profile("rpi5")], extra / "digits-lite.eaigc",
            ConvertOptions(format="tflite", name="digits-lite"))
    out = subprocess.run(["bash", str(RUN), "--broker-port", str(broker.port), "--bundles", str(extra),
                          "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    print(out.stdout[-6000:], out.stderr[-4000:])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[arm64" in out.stdout and "PASS" in out.stdout
    assert "identical" in out.stdout and "FAIL " not in out.stdout
    # one round trip per bundle run.sh serves: every rpi5 zoo bundle, and the TFLite one above
    served = sorted(b.model for b in zoo.zoo_bundles() if b.profile == "rpi5") + ["digits-lite"]
    assert sorted(re.findall(r"MQTT round trip ok: (\S+) ", out.stdout)) == sorted(served)
