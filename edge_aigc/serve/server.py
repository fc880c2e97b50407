"""DeviceService: the device process, wired: one worker and its front ends.

The :class:`~.worker.Worker` runs every job, one at a time. The MQTT front end
(mqtt_frontend.py) takes requests from the command topics and drives the installer (ota/);
Home Assistant (homeassistant.py) rides on the MQTT connection; the HTTP API (http/) and the
Wyoming voice server (wyoming/) are front ends of their own. Each submits jobs to the same worker and queue, and none knows the
others: this class only builds them and starts and stops them in order.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..runtime.runtime import Runtime
from ..device.system import cpu_temperature_c
from .config import ServiceConfig, read_tokens
from .homeassistant import HomeAssistant
from .ledger import RequestLedger
from .mqtt.frontend import MqttFrontEnd
from ..lifecycle.ota import Installer
from .systemd import notify
from .worker import Worker

__all__ = ["DeviceService"]

log = logging.getLogger(__name__)


class DeviceService:
    """The worker, the installer and the front ends of one device, from its config."""

    def __init__(self, cfg: ServiceConfig, runtime: Runtime):
        self.cfg, self.rt = cfg, runtime
        lim = cfg.limits
        self.worker = Worker(runtime, lim.queue_size, lim.request_timeout_s,
                             RequestLedger(lim.dedup_ids, lim.outbox_bytes))
        self.installer = None
        if runtime.store is not None and runtime.state_dir is not None:  # over-the-air installs (ota/)
            self.installer = Installer(runtime.state_dir, runtime.store, runtime, cfg.device_id,
                                       self.worker.between_requests, lim.ota_retry_s, lim.ota_idle_timeout_s,
                                       lim.ota_jobs, lim.ota_url_installs)
        self.mqtt = MqttFrontEnd(cfg, runtime, self.worker, self.installer)
        self.mqtt.on_connect(self._ready)
        self.ha = None
        if cfg.homeassistant.enabled:  # MQTT discovery, prompt box and buttons (homeassistant.py)
            self.ha = HomeAssistant(cfg.homeassistant, cfg.device_id, self.mqtt.topics, runtime,
                                    self.worker.submit, self.mqtt.publish)
            self.mqtt.route(self.ha.subscriptions, self.ha.handles,
                            lambda topic, payload: self.ha.on_message(topic, payload, _has_cpu_temperature()))
            self.mqtt.on_connect(lambda: self.ha.publish_discovery(_has_cpu_temperature()))
        self.http = None
        if cfg.http.enabled:  # the OpenAI-compatible API: same worker, same limits (http.py)
            from .http.server import HttpServer

            from .http.installs import InstallRoutes

            installs = InstallRoutes(self.installer, lim.max_payload_bytes).routes() if self.installer else []
            self.http = HttpServer(self.worker, self.mqtt.metrics, lim.max_payload_bytes, cfg.http,
                                   read_tokens(cfg.http), installs)
        self.wyoming = None
        if cfg.wyoming.enabled:  # Home Assistant's voice protocol: same worker (wyoming/)
            from .wyoming.server import WyomingServer

            self.wyoming = WyomingServer(self.worker, cfg.wyoming, cfg.device_id)
        self._ready_event, self._stopped = threading.Event(), threading.Event()

    @property
    def transport(self):
        return self.mqtt.transport

    @property
    def healthy(self) -> bool:
        return self.worker.healthy

    def metrics(self) -> dict[str, Any]:
        return self.mqtt.metrics()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.worker.start()
        if self.installer is not None:
            self.installer.start()
        if self.http is not None:
            self.http.start()
        if self.wyoming is not None:
            self.wyoming.start()
        self.mqtt.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once connected, subscribed and announced (False after ``timeout`` seconds)."""
        return self._ready_event.wait(timeout)

    def _ready(self) -> None:
        if not self._ready_event.is_set():
            self._ready_event.set()
            notify(f"READY=1\nSTATUS=serving {', '.join(self.rt.loaded())} as {self.cfg.device_id}")

    def stop(self) -> None:
        """Drain: refuse queued work, let the running request finish (or cancel it), go offline."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        notify("STOPPING=1")
        self.mqtt.stopping()
        self.worker.stop(self.cfg.limits.drain_timeout_s)
        if self.http is not None:
            self.http.stop()
        if self.wyoming is not None:
            self.wyoming.stop()
        if self.installer is not None:
            self.installer.stop()
        log.info("requests drained; publishing offline and disconnecting")
        self.mqtt.stop()


def _has_cpu_temperature() -> bool:
    return cpu_temperature_c() is not None
