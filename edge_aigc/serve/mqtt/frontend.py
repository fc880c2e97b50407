"""The MQTT front end: requests from the device's command topics to the worker, replies back.

The paho network thread only parses, checks and hands on: a request's structure is checked by
``protocol.parse_request`` and its parameters by :meth:`Worker.submit` before it takes a queue
slot, so a bad request is answered ``error`` at once and an ``accepted`` event means the job is
queued. Other MQTT users share the connection through :meth:`MqttFrontEnd.route`: Home
Assistant's topics, and the install chunks the front end unframes for the transport-free
installer. Nothing a client sends can stop the service: every failure becomes an ``error``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt

from ..._version import __version__
from ...contract import Action, EventKind
from ...errors import BadRequest, Busy, Cancelled, RequestError
from ...runtime.runtime import Runtime
from ...device.system import cpu_temperature_c, rss_mb
from ..config import ServiceConfig
from ..ledger import Reply
from .replies import MqttInstallEvents, MqttReplies
from ...lifecycle.ota import Installer
from .protocol import Request, Topics, error_event, event, parse_request, unframe_chunk
from .transport import MqttTransport
from ..worker import Job, Worker

__all__ = ["MqttFrontEnd"]

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class MqttFrontEnd:
    def __init__(self, cfg: ServiceConfig, runtime: Runtime, worker: Worker, installer: Installer | None):
        self.cfg, self.rt, self.worker, self.installer = cfg, runtime, worker, installer
        self.topics = Topics(cfg.root, cfg.mqtt.topic_root, cfg.mqtt.pool)
        self._routes: list[tuple[Callable[[str], bool], Handler]] = []
        self._on_connect: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._subs = [self.topics.cmd] + ([self.topics.pool_cmd] if cfg.mqtt.pool else [])
        if installer is not None:
            installer.events = MqttInstallEvents(self.topics, self.publish)
            prefix = self.topics.ota_prefix
            self.route([self.topics.ota("+")], lambda topic: topic.startswith(prefix), self._on_chunk)
        self.transport = MqttTransport(
            cfg.mqtt, cfg.mqtt.client_id or f"edge-aigc-{cfg.device_id}", self._subs, self._on_message,
            will=(self.topics.status, self.status_payload("offline")), outbox_messages=cfg.limits.outbox_messages,
            outbox_bytes=cfg.limits.outbox_bytes, on_connected=self._connected)
        self._metrics = threading.Thread(target=self._publish_metrics, name="metrics", daemon=True)
        worker.watch(self.publish_status)

    def route(self, subscriptions: list[str], handles: Callable[[str], bool], handler: Handler) -> None:
        """Subscribe to ``subscriptions`` and hand each message whose topic ``handles`` accepts to
        ``handler(topic, payload)`` on the network thread. Call before :meth:`start`."""
        self._subs.extend(subscriptions)
        self._routes.append((handles, handler))

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every (re)connect, after the status is published."""
        self._on_connect.append(callback)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.transport.start()
        self._metrics.start()

    def _connected(self) -> None:
        self.publish_status()
        if self.installer is not None:
            self.installer.announce_all()
        for callback in self._on_connect:
            callback()

    def stopping(self) -> None:
        """From now on every request is refused as ``cancelled`` (the service is draining)."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        self.transport.stop(last=(self.topics.status, self.status_payload("offline")))

    # -- status and metrics -----------------------------------------------------------
    def status_payload(self, state: str) -> bytes:
        profile = self.rt.profile.name if self.rt.profile else ""
        installed = self.rt.store.summary() if self.rt.store is not None else {}
        return json.dumps({"state": state, "device": self.cfg.device_id, "profile": profile,
                           "version": __version__, "models": self.rt.loaded(),
                           "installed": {n: {"active": s["active"], "versions": s["versions"]}
                                         for n, s in installed.items()},
                           "busy": self.worker.busy if state == "online" else False,
                           "pool": self.cfg.mqtt.pool or None, "ts": round(time.time(), 3)}).encode()

    def publish_status(self) -> None:
        self.transport.publish(self.topics.status, self.status_payload("online"), retain=True)

    def metrics(self) -> dict[str, Any]:
        return {"device": self.cfg.device_id, **self.worker.metrics(), "rss_mb": rss_mb(),
                "cpu_temp_c": cpu_temperature_c(), "outbox": self.transport.outbox_size,
                "outbox_dropped": self.transport.dropped, "ts": round(time.time(), 3)}

    def _publish_metrics(self) -> None:
        while not self._stopping.wait(self.cfg.limits.metrics_interval_s):
            if self.transport.connected:
                self.transport.publish(self.topics.metrics, json.dumps(self.metrics()).encode(), qos=0)

    # -- messages in ------------------------------------------------------------------
    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            for handles, handler in self._routes:
                if handles(msg.topic):
                    handler(msg.topic, msg.payload)
                    return
            self._on_request(msg)
        except Exception:  # a bug must not take the network thread down
            log.exception("unexpected error handling a message on %s", msg.topic)

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        job_id, _, index = topic[len(self.topics.ota_prefix):].partition("/")
        if re.fullmatch(r"[0-9]{1,9}", index) and self.installer is not None:  # not '²': int() refuses it
            self.installer.receive(job_id, int(index), unframe_chunk(payload))

    def _on_request(self, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        try:
            req = parse_request(msg.payload, self.topics, self.cfg.limits.max_payload_bytes,
                                response_topic, correlation)
        except RequestError as exc:
            self.worker.stats.rejected += 1
            self.send(Reply(getattr(exc, "reply_to", self.topics.errors),
                            error_event(getattr(exc, "request_id", None), exc), None, correlation))
            return
        self._dispatch(req)

    def _dispatch(self, req: Request) -> None:
        replies = MqttReplies(req, self.topics, self.cfg.device_id, self.worker.ledger, self.send)
        existing = self.worker.ledger.claim(req.id)
        if existing is not None:
            log.info("request %s seen before (%s): not running it again", req.id, existing.state)
            for reply in existing.replies:
                self.send(Reply(reply.topic, reply.payload, reply.content_type, req.correlation))
        elif self._stopping.is_set():
            self._refuse(req, replies, Cancelled("service is stopping"))
        elif req.action in (Action.STATUS, Action.MODELS, Action.CANCEL):
            self._answer_now(req, replies)
        elif req.action == Action.INSTALL:
            self.worker.ledger.forget(req.id)  # a job's record, not the ledger, answers a re-sent install
            self._install(req, replies)
        else:
            self._submit(req, replies)

    def _submit(self, req: Request, replies: MqttReplies) -> None:
        job = Job(req.id, req.action, req.model, replies, req.params, req.task, req.session_owner,
                  req.timeout_s, req.received)
        try:
            position = self.worker.submit(job)
        except Busy as exc:
            self.worker.ledger.forget(req.id)  # the client may retry with the same id later
            replies.reply(error_event(req.id, exc))
        except RequestError as exc:  # refused before the queue (the worker counted it): the answer, kept
            replies(exc)
        else:
            replies.reply(event(EventKind.ACCEPTED, req.id, action=req.action, queue_position=position))

    def _refuse(self, req: Request, replies: MqttReplies, exc: RequestError) -> None:
        self.worker.stats.record(time.monotonic() - req.received, False)
        replies(exc)

    def _answer_now(self, req: Request, replies: MqttReplies) -> None:
        if req.action == Action.STATUS:
            fields = {"status": json.loads(self.status_payload("online")), "metrics": self.metrics()}
        elif req.action == Action.MODELS:
            fields = {"models": [self.rt.info(name) for name in self.rt.loaded()],
                      "installed": self.rt.available(),
                      "versions": self.rt.store.summary() if self.rt.store is not None else {}}
        else:
            cancelled = (self.installer is not None and self.installer.cancel(req.target)) \
                or self.worker.cancel(req.target)
            fields = {"target": req.target, "cancelled": cancelled}
        self.worker.stats.record(time.monotonic() - req.received, True)
        replies.finish([replies.result([], **fields)])

    def _install(self, req: Request, replies: MqttReplies) -> None:
        if self.installer is None:
            self._refuse(req, replies, BadRequest("this device has no model store to install into"))
            return
        try:
            self.installer.submit(req.id, req.install, MqttInstallEvents.address(req))
        except RequestError as exc:
            self.worker.stats.rejected += 1
            replies.reply(error_event(req.id, exc))

    # -- messages out ---------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, retain: bool = False, content_type: str | None = None,
                correlation: bytes | None = None) -> None:
        self.transport.publish(topic, payload, qos=1, retain=retain, content_type=content_type,
                               correlation=correlation)

    def send(self, reply: Reply) -> None:
        self.publish(reply.topic, reply.payload, content_type=reply.content_type, correlation=reply.correlation)
