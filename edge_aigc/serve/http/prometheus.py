"""The service's metrics (``DeviceService.metrics()``) in Prometheus' text exposition format.

Written out here rather than through ``prometheus_client``: a handful of values the
service already keeps, read at scrape time, with no registry or collector objects to
wire, and one dependency less on the device. The tests parse the output with
``prometheus_client``'s own parser.
"""
from __future__ import annotations

from typing import Any

__all__ = ["exposition", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# metric name, type, help, how to read it from the metrics dict
_GAUGES = (
    ("queue_depth", "gauge", "Requests waiting in the queue (MQTT and HTTP share it).",
     lambda m: m["queue_depth"]),
    ("busy", "gauge", "1 while a request is running.", lambda m: int(m["busy"])),
    ("resident_memory_bytes", "gauge", "Resident set size of the service process.",
     lambda m: None if m.get("rss_mb") is None else round(m["rss_mb"] * 2**20)),
    ("cpu_temperature_celsius", "gauge", "SoC temperature, where the board exposes one.",
     lambda m: m.get("cpu_temp_c")),
    ("last_latency_seconds", "gauge", "Latency of the latest request.",
     lambda m: None if m.get("last_latency_ms") is None else m["last_latency_ms"] / 1000),
    ("outbox_messages", "gauge", "MQTT messages waiting for the broker.", lambda m: m["outbox"]),
    ("outbox_dropped_total", "counter", "MQTT messages dropped because the outbox was full.",
     lambda m: m["outbox_dropped"]),
    ("uptime_seconds", "gauge", "Seconds since the service started.", lambda m: m["uptime_s"]),
)


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))  # np.float64 too


def exposition(metrics: dict[str, Any], models: list[str], prefix: str = "edge_aigc") -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> str:
        full = f"{prefix}_{name}"
        lines.extend([f"# HELP {full} {help_}", f"# TYPE {full} {kind}"])
        return full

    for name, kind, help_, read in _GAUGES:
        value = read(metrics)
        if value is not None:
            lines.append(f"{family(name, kind, help_)} {_number(value)}")
    full = family("requests_total", "counter", "Requests by outcome: done, failed (an error event), "
                                               "rejected (refused before queueing: bad input, queue full).")
    lines += [f'{full}{{outcome="{k}"}} {int(metrics[k])}' for k in ("done", "failed", "rejected")]
    latency = metrics.get("latency_ms") or {}
    # quantiles of a sliding window (the last 1,000 requests), so gauges, not a summary
    full = family("request_latency_quantile_seconds", "gauge", "Request latency quantiles over the "
                                                               "last 1,000 requests.")
    lines += [f'{full}{{quantile="0.{q[1:]}"}} {_number(float(latency[q]) / 1000)}' for q in ("p50", "p90", "p99")
              if q in latency]
    full = family("model_loaded", "gauge", "1 for each loaded model.")
    lines += [f'{full}{{model="{m}"}} 1' for m in models]
    return "\n".join(lines) + "\n"
