"""Packaging: the device install stays light and every package ships."""
from __future__ import annotations

import configparser
import subprocess
import sys
from tests.helpers import ROOT

HOST_ONLY = ("torch", "onnx", "onnxslim", "transformers", "litert_torch", "converters", "benchmarks")


def test_every_python_package_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("edge_aigc/**/__init__.py")}
    found |= {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("converters/**/__init__.py")}
    found |= {"edge_aigc.device_profiles", "edge_aigc.systemd"}  # mapped from top-level folders
    assert found <= listed, f"missing from setup.cfg [options] packages: {sorted(found - listed)}"


def test_device_dependencies_exclude_host_packages():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    device = cfg["options"]["install_requires"].lower()
    for name in ("torch", "transformers", "litert-torch", "onnxslim"):
        assert name not in device, name
    assert "onnx>" not in device and "onnx\n" not in device


def test_device_side_imports_no_host_package():
    code = ("import sys, edge_aigc, edge_aigc.cli, edge_aigc.device.detect, edge_aigc.bundle.store;"
            "edge_aigc.cli.build_parser();"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {HOST_ONLY!r}];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"device side imported: {out.stdout}"


def test_the_wheel_ships_no_benchmarks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    assert not any(p == "benchmarks" or p.startswith("benchmarks.") for p in listed)


def test_the_bench_command_imports_no_benchmarks_until_it_runs():
    code = ("import sys, edge_aigc.cli.bench; from edge_aigc.cli import build_parser; build_parser();"
            "print(','.join(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_bench_command_names_every_part_the_benchmarks_run():
    from benchmarks.run import PARTS as RUN_PARTS
    from edge_aigc.cli.bench import PARTS

    assert sorted(PARTS) == sorted(RUN_PARTS)
