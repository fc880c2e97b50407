"""DeviceClient: what an application does to use a device over MQTT.

Subscribe to the reply and data topics first, publish the request (QoS 1), stream the
events, collect the binary results the ``result`` event names, and check each one's size
and sha256. Used by ``edge-aigc send``, ``edge-aigc demo`` and the tests.
"""
from __future__ import annotations

import hashlib
import json
import queue
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..contract import EventKind
from ..errors import BrokerError, IntegrityError, Timeout
from ..serve.config import DEFAULT_BROKER
from ..serve.mqtt.protocol import Topics, parse_broker_url
from ..serve.mqtt.transport import no_delay

__all__ = ["DeviceClient", "Response"]


@dataclass
class Response:
    id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)   # topic -> payload, verified
    correlation: bytes | None = None

    @property
    def final(self) -> dict[str, Any] | None:
        return self.events[-1] if self.events and self.events[-1]["event"] in (EventKind.RESULT, EventKind.ERROR) else None

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final["event"] == EventKind.RESULT


class DeviceClient:
    def __init__(self, url: str = DEFAULT_BROKER, protocol: int = 5, topic_root: str = "edge-aigc",
                 username: str | None = None, password: str | None = None, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None, client_id: str | None = None):
        broker = parse_broker_url(url)
        self.host, self.port = broker.host, broker.port
        self.root, self.v5 = topic_root, protocol == 5
        self.client_id = client_id or f"edge-aigc-client-{uuid.uuid4().hex[:12]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                                cert_reqs=ssl.CERT_REQUIRED)
        self._inbox: queue.Queue = queue.Queue()
        self._acks: queue.Queue = queue.Queue()
        self._connack: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self._inbox.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._acks.put(mid)
        self.client.on_socket_open = no_delay
        self.client.on_connect = self._on_connect
        self._topics: list[str] = []  # subscribed, again after a reconnect (the session is clean)
        # A broker that rejects a TLS client certificate closes the connection before CONNACK.
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connack.put(("disconnect", rc))

    def _on_connect(self, client, userdata, flags, rc, properties) -> None:
        if self._topics and not rc.is_failure:  # paho reconnected: the broker forgot our subscriptions
            client.subscribe([(topic, 1) for topic in self._topics])
        self._connack.put(("connect", rc))

    def connect(self, timeout: float = 10.0) -> "DeviceClient":
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        try:
            kind, rc = self._connack.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise Timeout(f"no answer from MQTT broker {self.host}:{self.port} within {timeout} s") from None
        if kind == "disconnect" or rc.is_failure:
            self.close()
            how = "refused the connection" if kind == "connect" else \
                "closed the connection before accepting it (TLS client certificate not trusted?)"
            raise BrokerError(f"MQTT broker {self.host}:{self.port} {how}: {rc}")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "DeviceClient":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, topic: str, timeout: float = 10.0) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        self._topics.append(topic)
        deadline = time.monotonic() + timeout
        while self._acks.get(timeout=max(deadline - time.monotonic(), 0.01)) != mid:
            pass

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """One QoS 1 message (paho queues it while reconnecting)."""
        self.client.publish(topic, payload, qos=1, retain=retain)

    def next_message(self, timeout: float) -> mqtt.MQTTMessage | None:
        """The next message on a subscribed topic, or None after ``timeout`` seconds."""
        try:
            return self._inbox.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None

    def request(self, device: str, action: str, model: str | None = None, params: dict | None = None,
                request_id: str | None = None, timeout: float = 60.0, pool: str | None = None,
                on_event: Callable[[dict[str, Any]], None] | None = None, **fields: Any) -> Response:
        """Send one request and wait for its result or error (raises Timeout if neither comes)."""
        rid = request_id or uuid.uuid4().hex[:16]
        topics = Topics.for_device(self.root, device)
        if pool:  # a pool member answers: replies come to a topic of ours, data from any device
            reply, data_prefix = topics.client_reply(self.client_id, rid), topics.any_device_data(rid)
            cmd = topics.pool_requests(pool)
        else:
            reply, data_prefix, cmd = topics.reply(rid), topics.data(rid), topics.cmd
        for topic in (reply, data_prefix, data_prefix + "/#"):
            self.subscribe(topic)
        body = {"id": rid, "action": action, **({"model": model} if model else {}),
                **({"params": params} if params else {}), **fields}
        if pool:
            body["reply_to"] = reply
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = rid.encode()
        self.client.publish(cmd, json.dumps(body).encode(), qos=1, properties=props)
        return self._collect(rid, reply, timeout, on_event)

    def _collect(self, rid: str, reply: str, timeout: float,
                 on_event: Callable[[dict[str, Any]], None] | None) -> Response:
        response, deadline = Response(rid), time.monotonic() + timeout
        while response.final is None or not self._have_all_data(response):
            try:
                msg = self._inbox.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise Timeout(f"request {rid}: no {'data' if response.final else 'result'} within {timeout} s") from None
            if msg.topic == reply:
                ev = json.loads(msg.payload)
                response.events.append(ev)
                props = getattr(msg, "properties", None)
                response.correlation = getattr(props, "CorrelationData", None) if props else None
                if on_event is not None:
                    on_event(ev)
            elif Topics.is_data(msg.topic):
                response.data[msg.topic] = msg.payload
        self._verify(response)
        return response

    @staticmethod
    def _have_all_data(response: Response) -> bool:
        return all(d["topic"] in response.data for d in response.final.get("data", []))

    @staticmethod
    def _verify(response: Response) -> None:
        for d in response.final.get("data", []):
            payload = response.data[d["topic"]]
            if len(payload) != d["bytes"] or hashlib.sha256(payload).hexdigest() != d["sha256"]:
                raise IntegrityError(f"data on {d['topic']} does not match the size/sha256 in the result")
