"""``edge-aigc bench --bundle B``: one bundle's own workload, measured where it runs.

The device half of the benchmarks: it needs only the device install (no torch, no source
checkout), so it runs on the Pi or Jetson the bundle is for. It measures the task's own
figure (decode tokens/s and prefill for text, images/s for images, the real-time factor
for audio) over repeats with their coefficient of variation, the cold start (load and
verify the bundle, open its session; then the first request), peak RSS, and the machine
facts that make a figure reproducible or explain it: CPU governor, SoC temperature before
and after, the Pi's throttling flags, the Jetson's power mode. ``--out DIR`` writes the
JSON that ``convert --recipe auto --measurements`` is meant to read back (issue #21).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import Unsupported
from .runtime import Runtime
from ..device.system import cpu_temperature_c, usable_cpus
from ..tasks.spec import get_spec
from ..tasks.text.sessions import SessionLimits

__all__ = ["HIGHER_IS_BETTER", "bench_bundle", "machine_facts", "format_report", "write_report"]

# Each task's headline figure, and which way is better (``convert --recipe auto`` ranks by it).
HIGHER_IS_BETTER = {"decode_tokens_per_s": True, "images_per_s": True, "real_time_factor": False}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _command(*argv: str) -> str | None:
    """A board tool's answer (vcgencmd, nvpmodel), or None where it is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return _read("/proc/device-tree/model") or platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """What a reader needs to reproduce a figure; None where this machine does not say."""
    cpus = usable_cpus()
    governors = sorted({g for g in (_read(str(p)) for p in Path("/sys/devices/system/cpu").glob(
        "cpu[0-9]*/cpufreq/scaling_governor")) if g})
    import onnxruntime

    return {"cpu": _cpu_model(), "arch": platform.machine(), "usable_cpus": cpus.count,
            "usable_cpus_why": cpus.why, "kernel": platform.release(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
            "governor": ",".join(governors) or None,
            "throttled": _command("vcgencmd", "get_throttled"),       # Raspberry Pi: 0x0 = never throttled
            "power_mode": _command("nvpmodel", "-q")}                  # Jetson


def _peak_rss_mb() -> float | None:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def bench_bundle(path: str | os.PathLike, profile: str | None = None, repeats: int = 5,
                 threads: int | None = None, public_key=None,
                 progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    before = cpu_temperature_c()
    start = time.perf_counter()
    # no prefix reuse: each run prefills its prompt as a first request would
    with Runtime([path], profile, threads=threads, public_key=public_key,
                 session_limits=SessionLimits(max_prefixes=0)) as rt:
        load_s = time.perf_counter() - start
        name = rt.loaded()[0]
        info = rt.info(name)
        spec = get_spec(info["task"])  # the task's fixed workload (the same on every device) and figures
        task, params = spec.name, dict(spec.workload)
        if spec.figures is None:
            raise Unsupported(f"bench --bundle: task {task} has no workload in its TaskSpec")
        runs: list[dict[str, float]] = []
        first_s = None
        for i in range(repeats + 1):  # the first run is the cold one: reported apart, not in the repeats
            t = time.perf_counter()
            result = rt.generate(name, **params)
            seconds = time.perf_counter() - t
            if i == 0:
                first_s = seconds
                continue
            runs.append(spec.figures(result, seconds))
            progress(f"{name}: run {i}/{repeats}: " + ", ".join(f"{k} {v:.4g}" for k, v in runs[-1].items()))
    headline = next(iter(runs[0]))
    values = [r[headline] for r in runs]
    mean = statistics.fmean(values)
    return {
        "bundle": Path(path).name, "model": name, "task": task, "format": info["format"], "recipe": info["recipe"],
        "profile": rt.profile.name if rt.profile else None, "threads": info["threads"],
        "providers": info["providers"], "workload": params, "repeats": repeats,
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        "headline": headline, "cv": statistics.pstdev(values) / mean if mean else None,
        "runs": runs, "cold_start": {"load_s": load_s, "first_request_s": first_s},
        "peak_rss_mb": _peak_rss_mb(),
        "machine": {**machine_facts(), "temperature_c_before": before, "temperature_c_after": cpu_temperature_c()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} ({r['task']}, {r['format']}/{r['recipe']}) on {r['profile'] or 'no profile'}, "
             f"{r['threads']} threads, {r['repeats']} repeats"]
    lines += [f"  {k:<22} {v:.4g}" + (f"   (CV {r['cv']:.1%})" if k == r["headline"] and r["cv"] is not None else "")
              for k, v in r["median"].items()]
    cold = r["cold_start"]
    lines += [f"  {'cold start':<22} load {cold['load_s']:.2f} s, first request {cold['first_request_s']:.3f} s",
              f"  {'peak RSS':<22} {r['peak_rss_mb']} MB"]
    m = r["machine"]
    facts = [f"{m['cpu']} ({m['arch']}), {m['usable_cpus']} usable CPUs", f"governor {m['governor'] or 'n/a'}",
             f"temperature {m['temperature_c_before']} → {m['temperature_c_after']} °C"
             if m["temperature_c_before"] is not None else "temperature n/a"]
    if m["throttled"] is not None:
        facts.append(f"throttled {m['throttled']}")
    if m["power_mode"] is not None:
        facts.append(f"power mode {m['power_mode'].splitlines()[0]}")
    lines.append(f"  {'machine':<22} " + "; ".join(facts))
    return "\n".join(lines)


def write_report(r: dict[str, Any], out: str | os.PathLike) -> Path:
    path = Path(out) / f"{r['model']}-{r['profile'] or 'host'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    return path
