"""``--recipe auto``: every candidate built, gated and measured; the fastest that passes and fits
the budgets is packaged, and the manifest says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from converters import ConvertOptions, convert
from edge_aigc import Runtime
from edge_aigc.errors import ConversionError
from edge_aigc.device.profiles import get_profile, load_profile
from tests.helpers import ROOT



def device_report(path, recipe: str, images_per_s: float, rss: float = 60.0, profile: str = "x86-avx2") -> None:
    """What `edge-aigc bench --bundle` writes on a device (the fields recipe auto reads)."""
    path.write_text(json.dumps({"model": "tiny-dcgan", "profile": profile, "format": "onnx", "recipe": recipe,
                                "headline": "images_per_s", "median": {"images_per_s": images_per_s},
                                "peak_rss_mb": rss}))


def test_auto_packages_the_fastest_passing_candidate_measured_on_this_host(tmp_path):
    [r] = convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], tmp_path / "img.eaigc",
                  ConvertOptions(recipe="auto", name="tiny-dcgan"))
    sel = r.manifest.fidelity["recipe_selection"]
    by = {c["recipe"]: c for c in sel["candidates"]}
    assert set(by) == {"fp32", "int8-dynamic", "int8-static", "int4"}  # no fp16 without a GPU provider
    assert by["int4"]["status"].startswith("not built")
    passed = [c for c in sel["candidates"] if c["status"] == "passed"]
    assert passed and all(c["measured_on"] == "host proxy" and c["peak_rss_mb"] > 0 for c in passed)
    fastest = max(passed, key=lambda c: c["figures"]["images_per_s"])
    [winner] = [c for c in passed if c["recipe"] == r.recipe]
    assert sel["winner"] == f"onnx/{r.recipe}" and "fastest" in sel["why"]
    if winner is not fastest:  # a tie within the measurement's spread goes to the smaller file
        spread = max(winner["cv"], fastest["cv"], 0.02)
        assert winner["figures"]["images_per_s"] >= fastest["figures"]["images_per_s"] * (1 - spread)
        assert winner["model_bytes"] < fastest["model_bytes"]
    with Runtime([r.bundle], profile="x86-avx2") as rt:
        assert rt.generate("tiny-dcgan", count=2).outputs


def test_device_measurements_decide_instead_of_the_host(tmp_path):
    reports = tmp_path / "device"
    reports.mkdir()
    for recipe, rate in (("fp32", 900.0), ("int8-dynamic", 1000.0), ("int8-static", 5000.0)):
        device_report(reports / f"{recipe}.json", recipe, rate)
    [r] = convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], tmp_path / "img.eaigc",
                  ConvertOptions(recipe="auto", name="tiny-dcgan", measurements=(reports,)))
    sel = r.manifest.fidelity["recipe_selection"]
    assert r.recipe == "int8-static" and "5000" in sel["why"] and "device" in sel["why"]
    assert {c["measured_on"] for c in sel["candidates"] if c["status"] == "passed"} == {"device"}


def test_a_tie_within_the_spread_goes_to_the_smaller_file(tmp_path):
    reports = tmp_path / "device"
    reports.mkdir()
    for recipe, rate in (("fp32", 1010.0), ("int8-dynamic", 1000.0), ("int8-static", 500.0)):
        device_report(reports / f"{recipe}.json", recipe, rate)  # no CV reported: 2% is the spread
    [r] = convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], tmp_path / "img.eaigc",
                  ConvertOptions(recipe="auto", name="tiny-dcgan", measurements=(reports,)))
    assert r.recipe == "int8-dynamic" and "smallest" in r.manifest.fidelity["recipe_selection"]["why"]


def test_a_budget_no_candidate_meets_is_an_error_listing_them(tmp_path):
    text = (ROOT / "device_profiles" / "x86-avx2.toml").read_text()
    small = tmp_path / "tight-box.toml"
    small.write_text(text.replace('name = "x86-avx2"', 'name = "tight-box"')
                     .replace("max_rss_mb = 4096", "max_rss_mb = 50"))
    reports = tmp_path / "device"
    reports.mkdir()
    for recipe in ("fp32", "int8-dynamic", "int8-static"):
        device_report(reports / f"{recipe}.json", recipe, 1000.0, rss=80.0, profile="tight-box")
    with pytest.raises(ConversionError, match="no candidate for tight-box") as info:
        convert("tests.helpers.tiny_models:tiny_dcgan", [load_profile(small)], tmp_path / "img.eaigc",
                ConvertOptions(recipe="auto", name="tiny-dcgan", measurements=(reports,)))
    message = str(info.value)
    assert message.count("over budget: peak RSS 80 MB > max_rss_mb 50") == 3 and "onnx/int4: not built" in message


def test_measurements_need_recipe_auto_and_must_be_bench_reports(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    cli = [sys.executable, "-m", "edge_aigc", "convert", "tests.helpers.tiny_models:tiny_dcgan", "--profile", "x86-avx2",
           "-o", str(tmp_path / "x.eaigc"), "--measurements", str(bad)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "--recipe auto" in done.stderr
    done = subprocess.run(cli + ["--recipe", "auto"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 9 and "not a report of `edge-aigc bench --bundle`" in done.stderr
