"""Helpers for service tests: device configs, in-process and subprocess services, raw MQTT."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_aigc.serve.app import build_service
from edge_aigc.serve.config import device_toml, load_config


def write_config(path: Path, port: int, models: list[Path], device_id: str = "dev", scheme: str = "mqtt",
                 mqtt_extra: str = "", limits: str = "", allow_unsigned: bool = True, http: dict | None = None,
                 homeassistant: dict | None = None, wyoming: dict | None = None, **top: str) -> Path:
    """A device.toml; the tiny test bundles are unsigned, so ``allow_unsigned`` is on unless asked.
    ``mqtt_extra`` and ``limits`` are TOML lines for those tables; ``http``, ``homeassistant``
    and ``wyoming`` the keys of theirs."""
    path.write_text(device_toml(
        device_id, [str(m) for m in models], f"{scheme}://127.0.0.1:{port}", profile="x86-avx2",
        state_dir=str(path.parent / ("state-" + device_id)), allow_unsigned=allow_unsigned or None, **top,
        mqtt=tomllib.loads(mqtt_extra), limits={"metrics_interval_s": 0.5, **tomllib.loads(limits)},
        http=http, homeassistant=homeassistant, wyoming=wyoming))
    return path


@contextmanager
def running_service(config: Path, timeout: float = 20.0):
    """The service in this process (what `edge-aigc serve` runs, minus signal handling)."""
    runtime, service = build_service(load_config(config))
    service.start()
    try:
        assert service.wait_ready(timeout), f"service not ready: {service.transport.last_refusal}"
        yield service
    finally:
        service.stop()
        runtime.close()


def serve_process(config: Path, env: dict | None = None, extra: list[str] = (),
                  log: Path | None = None) -> subprocess.Popen:
    """``edge-aigc serve`` as its own process; its log goes to ``log`` when given."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "edge_aigc", "serve", "--config", str(config), *extra],
                                stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL, env=env)
    finally:
        if log:
            out.close()


class Listener:
    """A raw paho client that records every message on the topics it subscribes to."""

    def __init__(self, broker, topics: list[str], protocol=mqtt.MQTTv5, client_id: str = "",
                 persistent: bool = False):
        kwargs = {"clean_session": False} if persistent and protocol == mqtt.MQTTv311 else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.put(mid)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        for _ in topics:
            self.subscribed.get(timeout=10)

    def publish(self, topic: str, payload: bytes, **kwargs) -> None:
        self.client.publish(topic, payload, qos=1, **kwargs).wait_for_publish(5)

    def next(self, timeout: float = 10.0, topic: str | None = None, event: str | None = None):
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            if topic is not None and msg.topic != topic:
                continue
            if event is not None and json.loads(msg.payload).get("event") != event:
                continue
            return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
