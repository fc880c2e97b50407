"""The MQTT contract, without MQTT: broker URLs, topics, request parsing, event payloads.

Both ends use it: the device service (server.py) and DeviceClient (client.py).

Full reference with examples: docs/protocol.md. Parsing never raises anything but
``RequestError`` subclasses, and tries to recover ``id`` and ``reply_to`` from a bad
request so its error can go where the client listens.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...contract import Action, EventKind, known_tasks
from ...errors import BadRequest, ConfigError, RequestError, TooLarge
from ...bundle.manifest import NAME_RE
from ...tasks.params import is_text
from ..payload import check_tree, decode
from ...lifecycle.ota.job import CHUNK_BYTES, INSTALL_FIELDS, InstallSpec, install_spec

__all__ = ["ACTIONS", "BrokerUrl", "InstallSpec", "CHUNK_BYTES", "frame_chunk", "unframe_chunk", "parse_broker_url", "Request", "Topics", "parse_request", "event", "error_event", "result_event"]

ACTIONS = tuple(Action)
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FIELDS = {"id", "action", "model", "task", "params", "reply_to", "target", "timeout_s"}


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; credentials never ride in the URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    if parts.username or parts.password:
        raise ConfigError(f"broker URL {url!r}: put credentials in username / password_file, not in the URL")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(parts.hostname, port or (8883 if tls else 1883), tls)


@dataclass(frozen=True)
class Topics:
    """Every topic of the contract, for both ends: the device derives its own, a client
    derives a device's with :meth:`for_device` (docs/protocol.md lists them)."""

    root: str          # edge-aigc/<device_id>
    topic_root: str    # edge-aigc
    pool: str = ""

    @classmethod
    def for_device(cls, topic_root: str, device_id: str) -> "Topics":
        return cls(f"{topic_root}/{device_id}", topic_root)

    def pool_requests(self, pool: str) -> str:
        """Where a client publishes a request for any member of ``pool``."""
        return f"{self.topic_root}/pool/{pool}/cmd"

    def client_reply(self, client_id: str, request_id: str) -> str:
        """A client's own reply topic, for requests whose answering device it cannot know."""
        return f"{self.topic_root}/clients/{client_id}/res/{request_id}"

    def any_device_data(self, request_id: str) -> str:
        """The data topic of ``request_id`` from whichever device answers (a subscription)."""
        return f"{self.topic_root}/+/data/{request_id}"

    @staticmethod
    def is_data(topic: str) -> bool:
        return "/data/" in topic

    @property
    def cmd(self) -> str:
        return f"{self.root}/cmd"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def metrics(self) -> str:
        return f"{self.root}/metrics"

    @property
    def errors(self) -> str:
        return f"{self.root}/errors"

    @property
    def pool_cmd(self) -> str | None:
        """MQTT 5 shared subscription: the broker hands each request to one pool member."""
        return f"$share/{self.pool}/{self.pool_requests(self.pool)}" if self.pool else None

    def reply(self, request_id: str) -> str:
        return f"{self.root}/res/{request_id}"

    def data(self, request_id: str, index: int = 0) -> str:
        return f"{self.root}/data/{request_id}" + (f"/{index}" if index else "")

    def jobs(self, job: str) -> str:
        """An install job's retained execution status."""
        return f"{self.root}/jobs/{job}"

    @property
    def ota_prefix(self) -> str:
        return f"{self.root}/ota/"

    def ota(self, job: str, index: int | None = None) -> str:
        """Where a host sends chunk ``index`` of job ``job``'s bundle (None: every chunk's topic)."""
        return f"{self.ota_prefix}{job}/" + ("+" if index is None else str(index))

    def chunk(self, request_id: str, index: int) -> str:
        """Where a part of the output ready early goes (speech: sentence ``index``'s WAV)."""
        return f"{self.root}/data/{request_id}/chunk/{index}"


@dataclass
class Request:
    """An MQTT request: the worker's job fields (worker.Job) in MQTT's envelope."""

    id: str
    action: str
    reply_to: str
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    target: str | None = None          # cancel: the request id to stop
    timeout_s: float | None = None
    task: str | None = None            # generate: one the model also serves (default: its own)
    correlation: bytes | None = None   # MQTT 5 CorrelationData, echoed on every reply
    received: float = field(default_factory=time.monotonic)
    install: InstallSpec | None = None  # install: the bundle it announces

    @property
    def session_owner(self) -> str:
        """Whose chat sessions these are: the reply topic's parent (one client's topics)."""
        return self.reply_to.rsplit("/", 1)[0]


DIGEST = 32  # an install chunk starts with the sha256 of the rest


def frame_chunk(data: bytes) -> bytes:
    """An install chunk as a device takes it over MQTT: its sha256, then its bytes."""
    return hashlib.sha256(data).digest() + data


def unframe_chunk(payload: bytes) -> bytes | None:
    """A framed chunk's bytes; None when they do not match the digest in front of them."""
    data = payload[DIGEST:]
    return data if len(payload) >= DIGEST and hashlib.sha256(data).digest() == payload[:DIGEST] else None


def _valid_topic(topic: Any) -> bool:
    return (isinstance(topic, str) and 0 < len(topic) <= 256 and not topic.startswith("$")
            and "+" not in topic and "#" not in topic and "\x00" not in topic and is_text(topic))


def parse_request(payload: bytes, topics: Topics, max_bytes: int, response_topic: str | None = None,
                  correlation: bytes | None = None) -> Request:
    """A checked request. On failure raises RequestError with ``.request_id`` / ``.reply_to`` set
    to whatever could be recovered (the reply topic falls back to the errors topic)."""
    fallback = response_topic if _valid_topic(response_topic) else topics.errors
    err = lambda exc, rid=None, reply=fallback: _annotate(exc, rid, reply)  # noqa: E731
    if len(payload) > max_bytes:
        raise err(TooLarge(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit"))
    try:
        data = decode(payload)
    except BadRequest as exc:
        raise err(exc) from None
    if not isinstance(data, dict):
        raise err(BadRequest(f"request must be a JSON object, got {type(data).__name__}"))
    rid = data.get("id")
    rid = rid if isinstance(rid, str) and _ID_RE.match(rid) else None
    reply = data.get("reply_to")
    if reply is not None and not _valid_topic(reply):  # unusable: answer on the id's default topic
        raise err(BadRequest("'reply_to' must be a topic without wildcards or a leading $"), rid,
                  topics.reply(rid) if rid else fallback)
    named = reply or response_topic  # JSON reply_to wins over MQTT 5 ResponseTopic
    reply = named if _valid_topic(named) else (topics.reply(rid) if rid else topics.errors)
    if rid is None:
        raise err(BadRequest("'id' is required: 1-128 characters of A-Z a-z 0-9 . _ : -"), None, reply)
    try:
        check_tree(data)
    except BadRequest as exc:
        raise err(exc, rid, reply) from None
    unknown = sorted(set(data) - _FIELDS - (INSTALL_FIELDS if data.get("action") == Action.INSTALL else set()))
    if unknown:
        raise err(BadRequest(f"unknown field {unknown[0]!r}"), rid, reply)
    action = data.get("action")
    if action not in ACTIONS:
        raise err(BadRequest(f"'action' must be one of {', '.join(ACTIONS)}, got {action!r}"), rid, reply)
    model, params, target = data.get("model"), data.get("params", {}), data.get("target")
    if model is not None and not (isinstance(model, str) and NAME_RE.match(model)):
        raise err(BadRequest(f"'model' must be the name of a model on the device (matching "
                             f"{NAME_RE.pattern}); clients never name files"), rid, reply)
    if action in (Action.GENERATE, Action.LOAD, Action.UNLOAD, Action.ROLLBACK) and model is None:
        raise err(BadRequest(f"'model' is required for {action}"), rid, reply)
    if not isinstance(params, dict):
        raise err(BadRequest("'params' must be an object"), rid, reply)
    if action == Action.CANCEL and not (isinstance(target, str) and _ID_RE.match(target)):
        raise err(BadRequest("cancel needs 'target': the id of the request to stop"), rid, reply)
    task = data.get("task")
    if task is not None and task not in known_tasks():
        raise err(BadRequest(f"'task' must be one of {', '.join(known_tasks())}, got {task!r}"), rid, reply)
    timeout = data.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout <= 86400):
        raise err(BadRequest("'timeout_s' must be a number of seconds in (0, 86400]"), rid, reply)
    try:
        install = install_spec(data, rid) if action == Action.INSTALL else None
    except BadRequest as exc:
        raise err(exc, rid, reply) from None
    return Request(rid, Action(action), reply, model, params, target, timeout, task, correlation,
                   install=install)


def _annotate(exc: RequestError, request_id: str | None, reply_to: str) -> RequestError:
    exc.request_id, exc.reply_to = request_id, reply_to  # type: ignore[attr-defined]
    return exc


def event(kind: EventKind, request_id: str | None, **fields: Any) -> bytes:
    return json.dumps({"event": kind, "id": request_id, **fields, "ts": round(time.time(), 3)},
                      ensure_ascii=False).encode()


def error_event(request_id: str | None, exc: RequestError) -> bytes:
    return event(EventKind.ERROR, request_id, code=exc.code, message=str(exc))


def data_ref(topic: str, content_type: str, payload: bytes, name: str) -> dict[str, Any]:
    """How an event names a binary payload it published: topic, type, size, sha256, name."""
    return {"topic": topic, "content_type": content_type, "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(), "name": name}


def result_event(request_id: str, data_topics: list[tuple[str, str, bytes, str]], **fields: Any) -> bytes:
    """``data_topics``: (topic, content_type, payload, name) already published for this result."""
    data = [data_ref(t, ct, p, n) for t, ct, p, n in data_topics]
    return event(EventKind.RESULT, request_id, data=data, **fields)
