"""The MQTT service: overhead over the direct API, throughput, cold start and peak memory.

A private Mosquitto on a free loopback port; the service runs as its own process
(``edge-aigc serve``), as on a device; clients are ``DeviceClient``s in this process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge_aigc.contract import Task
from edge_aigc.serve.config import device_toml

from .common import Report, median, threads

__all__ = ["bench_mqtt", "bench_cold_start"]

PROFILE = "x86-avx2"


def device_config(path: Path, port: int, models: list[Path], queue: int = 8, http: dict | None = None) -> Path:
    """The bench device's config: device id ``bench``, the x86 profile, ``[http]`` when given."""
    path.write_text(device_toml("bench", [str(m) for m in models], f"mqtt://127.0.0.1:{port}", profile=PROFILE,
                                state_dir=str(path.parent / "state"),
                                limits={"queue_size": queue, "metrics_interval_s": 60}, http=http))
    return path


def serve(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_aigc", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_online(port: int, since: float, timeout: float = 60.0) -> float:
    """Seconds from ``since`` until an ``online`` status arrives (retained or live)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    seen = threading.Event()
    when: list[float] = []

    def on_message(client, userdata, msg):
        if msg.payload and json.loads(msg.payload).get("state") == "online" and not seen.is_set():
            when.append(time.perf_counter())
            seen.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("edge-aigc/bench/status", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not seen.wait(timeout):
            raise RuntimeError("the service did not come online")
        return when[0] - since
    finally:
        c.disconnect()
        c.loop_stop()


def clear_status(port: int) -> None:
    import paho.mqtt.publish as publish

    publish.single("edge-aigc/bench/status", b"", retain=True, hostname="127.0.0.1", port=port)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_mqtt(bundle: Path, requests: int, seconds: float, progress=print) -> tuple[Report, dict]:
    from edge_aigc import Runtime
    from edge_aigc.remote.local_brokers import Mosquitto
    from edge_aigc.remote.client import DeviceClient

    params = {"count": 1, "seed": 1}
    with Runtime([bundle], profile=PROFILE, threads=threads()) as rt:
        name = rt.loaded()[0]
        rt.generate(name, **params)
        direct = []
        for _ in range(requests):
            start = time.perf_counter()
            rt.generate(name, **params)
            direct.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        proc = serve(device_config(Path(tmp) / "device.toml", broker.port, [bundle], queue=64))
        try:
            wait_online(broker.port, time.perf_counter())
            url = f"mqtt://127.0.0.1:{broker.port}"
            with DeviceClient(url) as c:
                c.request("bench", "generate", name, params)
                e2e = []
                for _ in range(requests):
                    start = time.perf_counter()
                    assert c.request("bench", "generate", name, params).ok
                    e2e.append(time.perf_counter() - start)
            progress("mqtt: latency done; throughput …")
            rates = {n: _throughput(url, name, params, n, seconds) for n in (1, 4, 16)}
        finally:
            proc.terminate()
            proc.wait(30)
    report = Report(f"MQTT — {name} (1 image) through Mosquitto vs the direct API, {requests} requests",
                    ["measure", "p50 ms", "p99 ms"])
    report.add("direct Runtime.generate", median(direct) * 1e3, percentile(direct, 0.99) * 1e3)
    report.add("over MQTT (send → result, data verified)", median(e2e) * 1e3, percentile(e2e, 0.99) * 1e3)
    overhead = (median(e2e) - median(direct)) * 1e3, (percentile(e2e, 0.99) - percentile(direct, 0.99)) * 1e3
    report.add("overhead", *overhead)
    for n, (done, busy) in rates.items():
        report.notes.append(f"{n} concurrent client(s): {done / seconds:.1f} requests/s completed, {busy} busy")
    return report, {"direct_ms": [d * 1e3 for d in direct], "mqtt_ms": [e * 1e3 for e in e2e],
                    "overhead_p50_ms": overhead[0], "overhead_p99_ms": overhead[1],
                    "throughput": {n: {"per_s": d / seconds, "busy": b} for n, (d, b) in rates.items()}}


def _throughput(url: str, name: str, params: dict, clients: int, seconds: float) -> tuple[int, int]:
    from edge_aigc.remote.client import DeviceClient

    return closed_loop(clients, seconds, lambda: DeviceClient(url),
                       lambda c: c.request("bench", "generate", name, params, timeout=60).ok)


def closed_loop(clients: int, seconds: float, connect: Callable[[], Any], call: Callable[[Any], bool]) -> tuple[int, int]:
    """``clients`` threads, each with its own connection (``connect()``, a context manager), making
    requests back to back for ``seconds``: (answered, refused as busy) counts."""
    done, busy, stop = [0], [0], time.perf_counter() + seconds
    lock = threading.Lock()

    def worker():
        with connect() as c:
            while time.perf_counter() < stop:
                ok = call(c)
                with lock:
                    done[0] += ok
                    busy[0] += not ok
    pool = [threading.Thread(target=worker) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return done[0], busy[0]


def proc_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of a process from /proc (VmHWM: peak RSS; VmRSS: now), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_cold_start(bundles: dict[str, Path], repeats: int, progress=print) -> tuple[Report, dict]:
    """Process start → retained ``online`` with all models; peak RSS with each model alone."""
    from edge_aigc.device.profiles import list_profiles
    from edge_aigc.remote.local_brokers import Mosquitto
    from edge_aigc.remote.client import DeviceClient

    requests = {Task.TEXT: {"prompt": "You will", "max_new_tokens": 32},
                Task.IMAGE: {"count": 8}, Task.AUDIO: {"notes": "C4:1 E4:1 G4:2"}}
    starts, rss = [], {}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        config = device_config(Path(tmp) / "device.toml", broker.port, list(bundles.values()))
        for _ in range(repeats):
            clear_status(broker.port)
            t0 = time.perf_counter()
            proc = serve(config)
            starts.append(wait_online(broker.port, t0))
            proc.terminate()
            proc.wait(30)
        for name, bundle in bundles.items():
            progress(f"peak RSS: {name} …")
            clear_status(broker.port)
            t0 = time.perf_counter()
            proc = serve(device_config(Path(tmp) / f"{name}.toml", broker.port, [bundle]))
            try:
                wait_online(broker.port, t0)
                from edge_aigc import load_bundle

                task = load_bundle(bundle).manifest.task
                with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
                    assert c.request("bench", "generate", name, requests[task], timeout=120).ok
                rss[name] = proc_mb(proc.pid)
            finally:
                proc.terminate()
                proc.wait(30)
    budgets = {p.name: p.budget.max_rss_mb for p in list_profiles()}
    report = Report(f"Cold start and memory — the service process with the zoo models (median of {repeats})",
                    ["measure", "value"])
    report.add("process start → retained online, all three models", f"{median(starts):.2f} s")
    for name, mb in rss.items():
        report.add(f"peak RSS serving {name} alone (after one request)", f"{mb:.0f} MB")
    report.notes.append("max_rss_mb budgets: " + ", ".join(f"{k} {v} MB" for k, v in budgets.items()))
    return report, {"cold_start_s": starts, "peak_rss_mb": rss, "budgets_mb": budgets}
