"""The HTTP API: overhead over the direct API (next to MQTT's), streaming time to first
token over HTTP and MQTT, requests/s at 1/4/16 clients, and the service's idle RSS with
and without the HTTP server.

The service runs as its own process (``edge-aigc serve``, MQTT and HTTP both on) beside a
private Mosquitto; the direct, MQTT and HTTP requests take turns in one loop, so the
three series see the same machine moments apart.
"""
from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path

from .common import Report, median, threads
from .service import PROFILE, closed_loop, device_config, percentile, proc_mb, serve, wait_online

__all__ = ["bench_http"]

TOKEN = "bench-token-0123456789abcdef"
IMAGE = {"count": 1, "seed": 1}
TEXT = {"prompt": "You will", "max_new_tokens": 32, "temperature": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the HTTP API did not come up")


def _ttft_http(http, url: str, model: str) -> float:
    body = {"model": model, "prompt": TEXT["prompt"], "max_tokens": TEXT["max_new_tokens"], "temperature": 0,
            "stream": True}
    start = time.perf_counter()
    first = None
    with http.stream("POST", f"{url}/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                first = time.perf_counter() - start
    return first


def _ttft_mqtt(client, model: str) -> float:
    start, first = time.perf_counter(), []
    client.request("bench", "generate", model, TEXT, timeout=60,
                   on_event=lambda e: first.append(time.perf_counter() - start) if e["event"] == "token" else None)
    return first[0]


def _rate(url: str, model: str, clients: int, seconds: float) -> tuple[int, int]:
    import httpx

    body = {"model": model, "prompt": "", "n": 1, "seed": 1}

    def call(http) -> bool:
        r = http.post(f"{url}/v1/images/generations", json=body)
        if r.status_code != 429:
            r.raise_for_status()
        return r.status_code == 200

    return closed_loop(clients, seconds, lambda: httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"},
                                                              timeout=60), call)


def _idle_rss(tmp: Path, broker_port: int, bundles: list[Path], http_table: dict, repeats: int) -> dict[str, list]:
    """The service's idle RSS without and with the HTTP server, the two configs in turn."""
    idle: dict[str, list] = {"without HTTP": [], "with HTTP": []}
    for _ in range(repeats):
        for label, table in (("without HTTP", None), ("with HTTP", http_table)):
            proc = serve(device_config(tmp / "idle.toml", broker_port, bundles, http=table))
            try:
                wait_online(broker_port, time.perf_counter())
                time.sleep(1.0)
                idle[label].append(proc_mb(proc.pid, "VmRSS"))
            finally:
                proc.terminate()
                proc.wait(30)
    return idle


def _latencies(rt, mqtt, http, url: str, image_name: str, text_name: str, requests: int,
               progress) -> tuple[list, list, list, dict]:
    """Interleaved: direct, MQTT, HTTP, one image each; then time to first token on both wires."""
    direct, mqtt_s, http_s, ttft = [], [], [], {"http": [], "mqtt": []}
    body = {"model": image_name, "prompt": "", "n": 1, "seed": 1}
    rt.generate(image_name, **IMAGE)
    mqtt.request("bench", "generate", image_name, IMAGE)
    http.post(f"{url}/v1/images/generations", json=body).raise_for_status()
    for _ in range(requests):
        t = time.perf_counter()
        rt.generate(image_name, **IMAGE)
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert mqtt.request("bench", "generate", image_name, IMAGE).ok
        mqtt_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        http.post(f"{url}/v1/images/generations", json=body).raise_for_status()
        http_s.append(time.perf_counter() - t)
    progress("http: latency done; time to first token …")
    for _ in range(requests // 4):
        ttft["mqtt"].append(_ttft_mqtt(mqtt, text_name))
        ttft["http"].append(_ttft_http(http, url, text_name))
    return direct, mqtt_s, http_s, ttft


def bench_http(image: Path, text: Path, requests: int, seconds: float, repeats: int,
               progress=print) -> tuple[Report, dict]:
    import httpx

    from edge_aigc import Runtime, load_bundle
    from edge_aigc.remote.client import DeviceClient
    from edge_aigc.remote.local_brokers import Mosquitto

    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker, \
            Runtime([image], profile=PROFILE, threads=threads()) as rt:
        image_name, text_name = rt.loaded()[0], load_bundle(text).manifest.name
        (Path(tmp) / "tokens").write_text(TOKEN + "\n")
        port = _free_port()
        http_table = {"enabled": True, "listen": f"127.0.0.1:{port}", "tokens_file": str(Path(tmp) / "tokens")}
        idle = _idle_rss(Path(tmp), broker.port, [image, text], http_table, repeats)
        progress("http: idle RSS done; latency …")
        proc = serve(device_config(Path(tmp) / "device.toml", broker.port, [image, text], queue=64, http=http_table))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_online(broker.port, time.perf_counter())
            _wait_http(url)
            with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as mqtt, \
                    httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
                direct, mqtt_s, http_s, ttft = _latencies(rt, mqtt, http, url, image_name, text_name, requests,
                                                          progress)
            progress("http: time to first token done; throughput …")
            rates = {n: _rate(url, image_name, n, seconds) for n in (1, 4, 16)}
        finally:
            proc.terminate()
            proc.wait(30)
    return _report(image_name, text_name, requests, seconds, repeats, direct, mqtt_s, http_s, ttft, rates, idle)


def _report(image_name: str, text_name: str, requests: int, seconds: float, repeats: int, direct: list,
            mqtt_ms: list, http_ms: list, ttft: dict, rates: dict, idle: dict) -> tuple[Report, dict]:
    ms = lambda xs, q: (percentile(xs, q) if q != 0.5 else median(xs)) * 1e3  # noqa: E731
    report = Report(f"HTTP — {image_name} (1 image) vs the direct API and MQTT, {requests} requests each, "
                    "interleaved; time to first token on " + text_name, ["measure", "p50 ms", "p99 ms"])
    report.add("direct Runtime.generate", ms(direct, 0.5), ms(direct, 0.99))
    report.add("over MQTT (send → result, data verified)", ms(mqtt_ms, 0.5), ms(mqtt_ms, 0.99))
    report.add("over HTTP (POST /v1/images/generations, b64 PNG)", ms(http_ms, 0.5), ms(http_ms, 0.99))
    overhead = {"mqtt": (ms(mqtt_ms, 0.5) - ms(direct, 0.5), ms(mqtt_ms, 0.99) - ms(direct, 0.99)),
                "http": (ms(http_ms, 0.5) - ms(direct, 0.5), ms(http_ms, 0.99) - ms(direct, 0.99))}
    report.add("overhead MQTT", *overhead["mqtt"])
    report.add("overhead HTTP", *overhead["http"])
    report.add("time to first token, MQTT (token event)", ms(ttft["mqtt"], 0.5), ms(ttft["mqtt"], 0.99))
    report.add("time to first token, HTTP (SSE chunk)", ms(ttft["http"], 0.5), ms(ttft["http"], 0.99))
    for n, (done, busy) in rates.items():
        report.notes.append(f"HTTP, {n} concurrent client(s): {done / seconds:.1f} requests/s completed, "
                            f"{busy} answered 429")
    report.notes.append("idle RSS of the service (both models loaded, median of "
                        f"{repeats}): without HTTP {median(idle['without HTTP']):.1f} MB, with HTTP "
                        f"{median(idle['with HTTP']):.1f} MB")
    return report, {"direct_ms": [d * 1e3 for d in direct], "mqtt_ms": [d * 1e3 for d in mqtt_ms],
                    "http_ms": [d * 1e3 for d in http_ms], "ttft_ms": {k: [v * 1e3 for v in vs] for k, vs in ttft.items()},
                    "overhead_p50_ms": overhead["http"][0], "overhead_p99_ms": overhead["http"][1],
                    "mqtt_overhead_p50_ms": overhead["mqtt"][0],
                    "throughput": {n: {"per_s": d / seconds, "busy": b} for n, (d, b) in rates.items()},
                    "idle_rss_mb": idle}
