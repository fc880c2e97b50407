"""DeviceService: MQTT requests in, runtime events out.

The paho network thread only parses and enqueues; one worker thread runs generation
(models share the CPU, so requests run one at a time from a bounded queue). Every
reply goes to the request's reply topic with its MQTT 5 CorrelationData. Nothing a
client sends can stop the service: every failure becomes an ``error`` event.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import paho.mqtt.client as mqtt

from .._version import __version__
from ..contract import Action, EventKind
from ..errors import BadRequest, Busy, Cancelled, EdgeAigcError, RequestError, StoreError, UnknownModel
from ..runtime import Runtime
from ..tasks.base import CancelToken, Chunk, Progress, Result, Token
from .config import ServiceConfig, read_tokens
from ..system import cpu_temperature_c, rss_mb
from .homeassistant import HomeAssistant
from .ledger import Reply, RequestLedger, Stats
from .ota import Installer
from .protocol import Request, Topics, data_ref, error_event, event, parse_request, result_event
from .systemd import notify
from .transport import MqttTransport

__all__ = ["DeviceService"]

log = logging.getLogger(__name__)


class DeviceService:
    def __init__(self, cfg: ServiceConfig, runtime: Runtime):
        self.cfg, self.rt = cfg, runtime
        self.topics = Topics(cfg.root, cfg.mqtt.topic_root, cfg.mqtt.pool)
        # requests, and the installer's model swaps (a callable and its Future) between them
        self.queue: queue.Queue[Request | tuple[Callable[[], Any], Future] | None] = \
            queue.Queue(maxsize=cfg.limits.queue_size)
        self.ledger = RequestLedger(cfg.limits.dedup_ids, cfg.limits.outbox_bytes)
        self.stats = Stats()
        self._cancelled: set[str] = set()
        self._running: tuple[Request, CancelToken] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        subs = [self.topics.cmd] + ([self.topics.pool_cmd] if cfg.mqtt.pool else [])
        self.installer = None
        if runtime.store is not None and runtime.state_dir is not None:  # over-the-air installs (ota.py)
            lim = cfg.limits
            self.installer = Installer(runtime.state_dir, runtime.store, runtime, self.topics, cfg.device_id,
                                       self._publish_plain, self.between_requests, lim.ota_retry_s,
                                       lim.ota_idle_timeout_s, lim.ota_jobs, lim.ota_url_installs)
            subs.append(self.topics.ota("+"))
        self.ha = None
        if cfg.homeassistant.enabled:  # MQTT discovery, prompt box and buttons (homeassistant.py)
            self.ha = HomeAssistant(cfg.homeassistant, cfg.device_id, self.topics, runtime, self.submit,
                                    self._publish_plain)
            subs += self.ha.subscriptions
        self.transport = MqttTransport(
            cfg.mqtt, cfg.mqtt.client_id or f"edge-aigc-{cfg.device_id}", subs, self._on_message,
            will=(self.topics.status, self._status("offline")), outbox_messages=cfg.limits.outbox_messages,
            outbox_bytes=cfg.limits.outbox_bytes, on_connected=self._on_connected)
        self._worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self._metrics = threading.Thread(target=self._publish_metrics, name="metrics", daemon=True)
        self.http = None
        if cfg.http.enabled:  # the OpenAI-compatible API: same queue, same limits (http.py)
            from .http import HttpServer

            self.http = HttpServer(self, cfg.http, read_tokens(cfg.http))

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()
        if self.installer is not None:
            self.installer.start()
        if self.http is not None:
            self.http.start()
        self.transport.start()
        self._metrics.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def healthy(self) -> bool:
        return self._worker.is_alive() and not self._stopping.is_set()

    def _on_connected(self) -> None:
        self.publish_status()
        if self.installer is not None:
            self.installer.on_connected()
        if self.ha is not None:
            self.ha.publish_discovery(cpu_temperature_c() is not None)
        if not self._ready.is_set():
            self._ready.set()
            notify(f"READY=1\nSTATUS=serving {', '.join(self.rt.loaded())} as {self.cfg.device_id}")

    def stop(self) -> None:
        """Drain: refuse queued work, let the running request finish (or cancel it), go offline."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        notify("STOPPING=1")
        while True:
            try:
                req = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(req, tuple):
                req[1].set_exception(Cancelled("service is stopping"))
            elif req is not None:
                self._fail(req, Cancelled("service is stopping; request not run"), time.monotonic())
        self.queue.put(None)
        self._worker.join(self.cfg.limits.drain_timeout_s)
        if self._worker.is_alive() and self._running is not None:
            self._running[1].cancel()
            self._worker.join(5)
        if self._worker.is_alive():
            log.warning("the worker did not stop within %.1f s of its cancel; going offline anyway",
                        self.cfg.limits.drain_timeout_s + 5)
        if self.http is not None:
            self.http.stop()
        if self.installer is not None:
            self.installer.stop()
        log.info("requests drained; publishing offline and disconnecting")
        self.transport.stop(last=(self.topics.status, self._status("offline")))

    # -- status and metrics -----------------------------------------------------------
    def _status(self, state: str) -> bytes:
        profile = self.rt.profile.name if self.rt.profile else ""
        installed = self.rt.store.summary() if self.rt.store is not None else {}
        return json.dumps({"state": state, "device": self.cfg.device_id, "profile": profile,
                           "version": __version__, "models": self.rt.loaded(),
                           "installed": {n: {"active": s["active"], "versions": s["versions"]}
                                         for n, s in installed.items()},
                           "busy": self._running is not None if state == "online" else False,
                           "pool": self.cfg.mqtt.pool or None, "ts": round(time.time(), 3)}).encode()

    def publish_status(self) -> None:
        self.transport.publish(self.topics.status, self._status("online"), retain=True)

    def metrics(self) -> dict[str, Any]:
        return {"device": self.cfg.device_id, "queue_depth": self.queue.qsize(),
                "busy": self._running is not None, "done": self.stats.done, "failed": self.stats.failed,
                "rejected": self.stats.rejected, "latency_ms": self.stats.latency_ms(),
                "last_latency_ms": self.stats.last_ms,
                "rss_mb": rss_mb(), "cpu_temp_c": cpu_temperature_c(),
                "outbox": self.transport.outbox_size, "outbox_dropped": self.transport.dropped,
                "uptime_s": round(time.monotonic() - self.stats.started, 1), "ts": round(time.time(), 3)}

    def _publish_metrics(self) -> None:
        while not self._stopping.wait(self.cfg.limits.metrics_interval_s):
            if self.transport.connected:
                self.transport.publish(self.topics.metrics, json.dumps(self.metrics()).encode(), qos=0)

    # -- requests in ------------------------------------------------------------------
    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if self.installer is not None and self.installer.handles(msg.topic):
            try:
                self.installer.on_chunk(msg.topic, msg.payload)
            except Exception:  # a bug must not take the network thread down
                log.exception("unexpected error handling an install chunk on %s", msg.topic)
            return
        if self.ha is not None and self.ha.handles(msg.topic):
            try:
                self.ha.on_message(msg.topic, msg.payload, cpu_temperature_c() is not None)
            except Exception:  # a bug must not take the network thread down
                log.exception("unexpected error handling Home Assistant's message on %s", msg.topic)
            return
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        try:
            req = parse_request(msg.payload, self.topics, self.cfg.limits.max_payload_bytes,
                                response_topic, correlation)
            self._dispatch(req)
        except RequestError as exc:
            self.stats.rejected += 1
            self._send(Reply(getattr(exc, "reply_to", self.topics.errors),
                             error_event(getattr(exc, "request_id", None), exc), None, correlation))
        except Exception:  # a bug must not take the network thread down
            log.exception("unexpected error handling a message on %s", msg.topic)

    def submit(self, req: Request) -> int:
        """Queue a request of another front end (HTTP: ``req.listener`` set); returns its queue
        position. Raises Busy when the queue is full: MQTT and HTTP share the queue and its limit."""
        if self._stopping.is_set():
            raise Cancelled("service is stopping")
        try:
            self.queue.put_nowait(req)
        except queue.Full:
            self.stats.rejected += 1
            raise _busy(self.cfg.limits.queue_size) from None
        return self.queue.qsize()

    def cancel(self, request_id: str) -> bool:
        """Stop a queued or running request (any front end's); False when it is not here."""
        return self._cancel(request_id)

    def retry_after_s(self) -> int:
        """Seconds a refused client should wait: the queue's length at the median latency."""
        p50 = self.stats.latency_ms().get("p50", 1000.0) / 1000
        return max(1, min(3600, round(p50 * max(self.queue.qsize(), 1) + 0.5)))

    def _dispatch(self, req: Request) -> None:
        existing = self.ledger.claim(req.id)
        if existing is not None:
            log.info("request %s seen before (%s): not running it again", req.id, existing.state)
            for reply in existing.replies:
                self._send(Reply(reply.topic, reply.payload, reply.content_type, req.correlation))
            return
        if self._stopping.is_set():
            self._fail(req, Cancelled("service is stopping"), req.received)
            return
        if req.action in (Action.STATUS, Action.MODELS, Action.CANCEL):
            self._answer_now(req)
            return
        if req.action == Action.INSTALL:
            self.ledger.forget(req.id)  # a job's record, not the ledger, answers a re-sent install
            self._install(req)
            return
        try:
            self.queue.put_nowait(req)
        except queue.Full:
            self.ledger.forget(req.id)  # the client may retry with the same id later
            self.stats.rejected += 1
            self._send(Reply(req.reply_to, error_event(req.id, _busy(self.cfg.limits.queue_size)), None,
                             req.correlation))
            return
        self._reply(req, event(EventKind.ACCEPTED, req.id, action=req.action, queue_position=self.queue.qsize()))

    def _answer_now(self, req: Request) -> None:
        if req.action == Action.STATUS:
            fields = {"status": json.loads(self._status("online")), "metrics": self.metrics()}
        elif req.action == Action.MODELS:
            fields = {"models": [self.rt.info(name) for name in self.rt.loaded()],
                      "installed": self.rt.available(),
                      "versions": self.rt.store.summary() if self.rt.store is not None else {}}
        else:
            fields = {"target": req.target, "cancelled": self._cancel(req.target)}
        self._finish(req, [self._result(req, [], **fields)], req.received, True)

    def _cancel(self, target: str) -> bool:
        if self.installer is not None and self.installer.cancel(target):
            return True
        running = self._running
        if running is not None and running[0].id == target:
            running[1].cancel()
            return True
        if any(isinstance(r, Request) and r.id == target for r in list(self.queue.queue)):
            self._cancelled.add(target)
            return True
        return False

    # -- the worker -------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            req = self.queue.get()
            if req is None:
                return
            if isinstance(req, tuple):  # the installer's swap: between two requests, never during one
                fn, done = req
                try:
                    done.set_result(fn())
                except BaseException as exc:
                    done.set_exception(exc)
                continue
            if req.id in self._cancelled:
                self._cancelled.discard(req.id)
                self._fail(req, Cancelled("cancelled before it started"), req.received)
                continue
            limit = min(req.timeout_s or self.cfg.limits.request_timeout_s, self.cfg.limits.request_timeout_s)
            cancel = CancelToken(timeout=max(limit - (time.monotonic() - req.received), 1e-6))
            self._running = (req, cancel)
            self.ledger.set_state(req.id, "running")
            self.publish_status()
            try:
                self._run(req, cancel)
            except RequestError as exc:
                self._fail(req, exc, req.received)
            except EdgeAigcError as exc:  # the device's fault (a refused bundle, a missing backend)
                log.error("request %s (%s %s) failed: %s", req.id, req.action, req.model, exc)
                self._fail(req, _internal(req, type(exc).__name__), req.received)
            except Exception:  # one failing request never takes the service down
                log.exception("request %s failed", req.id)
                self._fail(req, _internal(req, "unexpected error"), req.received)
            finally:
                self._running = None
                self.publish_status()

    def _run(self, req: Request, cancel: CancelToken) -> None:
        if req.action == Action.LOAD:
            name = self.rt.load_name(req.model)  # installed names only: clients never name device files
            fields = {"model": name, "loaded": self.rt.loaded()}
        elif req.action == Action.UNLOAD:
            self.rt.unload(req.model)
            fields = {"model": req.model, "loaded": self.rt.loaded()}
        elif req.action == Action.ROLLBACK:
            fields = self._rollback(req.model)
        else:
            # a client's chat sessions are its own: keyed by its reply topic's parent (or token)
            for ev in self.rt.stream(req.model, cancel, owner=req.session_owner, task=req.task, **req.params):
                if req.listener is not None:
                    if isinstance(ev, Result):  # stats first, as for MQTT: the client may read them next
                        self._finish(req, [], req.received, True)
                    req.listener(ev)
                elif isinstance(ev, Token):
                    self._reply(req, event(EventKind.TOKEN, req.id, text=ev.text, index=ev.index))
                elif isinstance(ev, Progress):
                    self._reply(req, event(EventKind.PROGRESS, req.id, step=ev.step, total=ev.total, message=ev.message))
                elif isinstance(ev, Chunk):  # its payload on its own data topic, then the event naming it
                    topic, out = self.topics.chunk(req.id, ev.index), ev.output
                    self._send(Reply(topic, out.data, out.content_type, req.correlation))
                    self._reply(req, event(EventKind.CHUNK, req.id, index=ev.index, meta=ev.meta,
                                           data=data_ref(topic, out.content_type, out.data, out.name)))
                elif isinstance(ev, Result):
                    self._deliver(req, ev)
            return
        self._finish(req, [self._result(req, [], **fields)], req.received, True)
        self.publish_status()

    def _deliver(self, req: Request, result: Result) -> None:
        """Binary outputs on the data topic first, then the result event that names them."""
        replies, data = [], []
        for i, out in enumerate(result.outputs):
            topic = self.topics.data(req.id, i)
            replies.append(Reply(topic, out.data, out.content_type, req.correlation))
            data.append((topic, out.content_type, out.data, out.name))
        fields: dict[str, Any] = {"model": result.model, "task": result.task, "meta": result.summary()}
        if result.text is not None:
            fields["text"] = result.text
        replies.append(self._result(req, data, **fields))
        self._finish(req, replies, req.received, True)

    # -- installs and rollbacks ----------------------------------------------------------
    def _install(self, req: Request) -> None:
        if self.installer is None:
            self._fail(req, BadRequest("this device has no model store to install into"), req.received)
            return
        try:
            self.installer.submit(req)
        except RequestError as exc:
            self.stats.rejected += 1
            self._reply(req, error_event(req.id, exc))

    def between_requests(self, fn: Callable[[], Any], timeout: float = 3600.0) -> Any:
        """Run ``fn`` on the worker between two requests (a request in flight finishes first)."""
        if self._stopping.is_set():
            raise Cancelled("service is stopping")
        done: Future = Future()
        self.queue.put((fn, done), timeout=timeout)
        return done.result(timeout)

    def _rollback(self, name: str) -> dict[str, Any]:
        """The rollback action (on the worker): the previous version active and serving again."""
        store = self.rt.store
        if store is None or name not in store.names():
            raise UnknownModel(f"model {name!r} is not installed in the store")
        try:
            version = store.rollback(name)
        except StoreError as exc:
            raise BadRequest(str(exc)) from None
        self.rt.reload(name)
        self.publish_status()
        return {"model": name, "version": version, "previous": store.summary()[name]["previous"]}

    # -- replies out --------------------------------------------------------------------
    def _publish_plain(self, topic: str, payload: bytes, retain: bool = False,
                       content_type: str | None = None, correlation: bytes | None = None) -> None:
        self.transport.publish(topic, payload, qos=1, retain=retain, content_type=content_type,
                               correlation=correlation)

    def _send(self, reply: Reply) -> None:
        self.transport.publish(reply.topic, reply.payload, qos=1, content_type=reply.content_type,
                               correlation=reply.correlation)

    def _result(self, req: Request, data: list, **fields: Any) -> Reply:
        """The result event; ``device`` says which device (of a pool) answered."""
        payload = result_event(req.id, data, device=self.cfg.device_id, **fields)
        return Reply(req.reply_to, payload, None, req.correlation)

    def _reply(self, req: Request, payload: bytes) -> None:
        self._send(Reply(req.reply_to, payload, None, req.correlation))

    def _finish(self, req: Request, replies: list[Reply], started: float, ok: bool) -> None:
        # Ledger and stats first: a client may act on the result (re-send the id, read the
        # metrics) within a millisecond of receiving it.
        self.stats.record(time.monotonic() - started, ok)
        if req.listener is not None:  # another front end's request: its listener has the answer
            return
        self.ledger.finish(req.id, replies)
        for reply in replies:
            self._send(reply)

    def _fail(self, req: Request, exc: RequestError, started: float) -> None:
        if req.listener is not None:
            self._finish(req, [], started, False)
            req.listener(exc)
            return
        self._finish(req, [Reply(req.reply_to, error_event(req.id, exc), None, req.correlation)], started, False)


def _busy(size: int) -> Busy:
    return Busy(f"the request queue is full ({size} waiting); try again later")


def _internal(req: Request, what: str) -> RequestError:
    """Code ``internal``, with a message that names no device path and quotes no device file:
    the details go to the device's log."""
    subject = f"{req.action} of {req.model!r}" if req.model else req.action
    return RequestError(f"{subject} failed on the device ({what}); the device log has the details")
