"""``edge-aigc bench --bundle``: a bundle's own workload with only the device install."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_aigc.runtime.bundle_bench import bench_bundle, format_report

NO_HOST = "import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'transformers', 'onnx', 'benchmarks')];"


def bench_cli(*args: str) -> subprocess.CompletedProcess:
    code = NO_HOST + f"from edge_aigc.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_a_text_bundle_reports_decode_speed_cold_start_rss_and_the_machine(bundles, tmp_path):
    done = bench_cli("bench", "--bundle", str(bundles["text"]), "--repeats", "3", "--profile", "x86-avx2",
                     "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [path] = tmp_path.glob("*.json")
    r = json.loads(path.read_text())
    assert r["model"] == "tiny-lm" and r["task"] == "text-generation" and r["profile"] == "x86-avx2"
    assert r["repeats"] == 3 and len(r["runs"]) == 3 and r["headline"] == "decode_tokens_per_s"
    assert r["median"]["decode_tokens_per_s"] > 0 and r["cv"] >= 0
    assert r["cold_start"]["load_s"] > 0 and r["cold_start"]["first_request_s"] > 0 and r["peak_rss_mb"] > 10
    assert {"cpu", "usable_cpus", "governor", "throttled", "power_mode", "temperature_c_before",
            "temperature_c_after", "onnxruntime"} <= set(r["machine"])
    assert "decode_tokens_per_s" in done.stdout and "cold start" in done.stdout


@pytest.mark.parametrize("kind, headline", [("image", "images_per_s"), ("audio", "real_time_factor")])
def test_generators_report_their_own_figure(bundles, kind, headline):
    r = bench_bundle(bundles[kind], "x86-avx2", repeats=2)
    assert r["headline"] == headline and r["median"][headline] > 0 and len(r["runs"]) == 2
    assert headline in format_report(r)


@pytest.mark.parametrize("args, code, message", [
    (["--repeats", "0"], 2, "--repeats must be between 1 and 1000"),
    (["--threads", "0"], 2, "--threads must be at least 1"),
])
def test_bad_arguments_are_usage_errors(bundles, args, code, message):
    done = bench_cli("bench", "--bundle", str(bundles["image"]), *args)
    assert done.returncode == code and message in done.stderr


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path):
    bad = tmp_path / "model.eaigc"
    bad.write_bytes(b"not a tar")
    done = bench_cli("bench", "--bundle", str(bad))
    assert done.returncode == 3 and "error" in done.stderr and "Traceback" not in done.stderr
