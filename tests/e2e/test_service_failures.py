"""The service as a process and under failure: SIGKILL, SIGTERM, systemd notify, broker restarts, pools."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import socket
import time
from collections import Counter

import pytest
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_aigc.remote.client import DeviceClient
from edge_aigc.remote.local_brokers import Mosquitto
from tests.helpers.service import Listener, running_service, serve_process, write_config


def wait_online(listener: Listener, device: str, timeout: float = 30.0) -> dict:
    while True:
        msg = listener.next(timeout=timeout, topic=f"edge-aigc/{device}/status")
        status = json.loads(msg.payload)
        if status["state"] == "online":
            return status


def test_sigkill_leaves_the_retained_offline_will(broker, bundles, tmp_path):
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundles["image"]], device_id="killme")
    proc = serve_process(cfg)
    try:
        listener = Listener(broker, ["edge-aigc/killme/status"])
        wait_online(listener, "killme")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        offline = json.loads(listener.next(topic="edge-aigc/killme/status").payload)
        assert offline["state"] == "offline"
        listener.close()
        late = Listener(broker, ["edge-aigc/killme/status"])  # a subscriber arriving later
        msg = late.next(topic="edge-aigc/killme/status")
        assert msg.retain and json.loads(msg.payload)["state"] == "offline"
        late.close()
    finally:
        proc.kill()


def test_sigterm_drains_publishes_offline_and_exits_0_with_systemd_notify(broker, bundles, tmp_path):
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(30)
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundles["slow"]], device_id="term",
                       limits="drain_timeout_s = 0.5")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
    log = tmp_path / "serve.log"
    proc = serve_process(cfg, env, log=log)
    try:
        messages = []
        while not any("READY=1" in m for m in messages) or not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        listener = Listener(broker, ["edge-aigc/term/status", "edge-aigc/term/res/r1"])
        wait_online(listener, "term")
        listener.publish("edge-aigc/term/cmd", json.dumps({
            "id": "r1", "action": "generate", "model": "slow-lm",
            "params": {"prompt": "The", "max_new_tokens": 2000, "temperature": 0.0,
                       "speculation": "off"}}).encode())  # plain decoding: seconds of tokens
        listener.next(topic="edge-aigc/term/res/r1", event="accepted")
        time.sleep(0.3)  # generating now (2000 tokens take ~2.5 s)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:  # seen once in CI: say where it stood
            pytest.fail("the service did not exit within 30 s of SIGTERM; its log ends:\n"
                        + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        assert code == 0
        final = json.loads(listener.next(topic="edge-aigc/term/res/r1", event="error").payload)
        assert final["code"] == "cancelled", "the running request is cancelled with an error event"
        status = json.loads(listener.next(topic="edge-aigc/term/status").payload)
        while status["state"] != "offline":
            status = json.loads(listener.next(topic="edge-aigc/term/status").payload)
        while not any("STOPPING=1" in m for m in messages):  # after the queued WATCHDOG=1 pings
            messages.append(sock.recv(4096).decode())
        listener.close()
    finally:
        proc.kill()
        sock.close()


def test_result_survives_a_broker_restart_mid_generation(bundles, tmp_path):
    store = tmp_path / "mosq-db"
    store.mkdir()
    conf = f"persistence true\npersistence_location {store}/\n"
    broker = Mosquitto(tmp_path / "broker", extra_config=conf).start()
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundles["slow"]], device_id="restart")
    try:
        with running_service(cfg):
            # A client with a persistent session, so the broker queues its replies while it is away.
            listener = Listener(broker, ["edge-aigc/restart/res/r1"], protocol=mqtt.MQTTv311,
                                client_id="restart-test-client", persistent=True)
            listener.publish("edge-aigc/restart/cmd", json.dumps({
                "id": "r1", "action": "generate", "model": "slow-lm",
                "params": {"prompt": "The", "max_new_tokens": 2000, "temperature": 0.0,
                           "speculation": "off"}}).encode())
            listener.next(event="accepted")
            time.sleep(0.3)
            broker.stop()   # mid-generation (2000 tokens take ~2.5 s) ...
            time.sleep(3)   # ... so the result is produced while the broker is away
            broker.start()  # same port, sessions restored from disk
            result = json.loads(listener.next(timeout=60, event="result").payload)
            assert result["meta"]["generated_tokens"] == 2000
            listener.close()
    finally:
        broker.stop()


def test_pool_of_two_devices_answers_each_request_exactly_once(broker, bundles, tmp_path):
    configs = [write_config(tmp_path / f"{d}.toml", broker.port, [bundles["image"]], device_id=d,
                            mqtt_extra='pool = "kitchen"') for d in ("pool-a", "pool-b")]
    with running_service(configs[0]), running_service(configs[1]):
        watcher = Listener(broker, ["edge-aigc/clients/+/res/+"])
        with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
            answers = [c.request("-", "generate", "tiny-dcgan", {"seed": i}, pool="kitchen") for i in range(20)]
        assert all(a.ok for a in answers)
        used = Counter(a.final["device"] for a in answers)
        assert set(used) == {"pool-a", "pool-b"}, used
        results = Counter()
        while True:
            try:
                ev = json.loads(watcher.next(timeout=1).payload)
            except Exception:
                break
            if ev["event"] == "result":
                results[ev["id"]] += 1
        assert len(results) == 20 and set(results.values()) == {1}
        watcher.close()


def test_pool_member_still_answers_requests_sent_to_its_own_id(broker, bundles, tmp_path):
    cfg = write_config(tmp_path / "d.toml", broker.port, [bundles["image"]], device_id="pool-c",
                       mqtt_extra='pool = "hall"')
    with running_service(cfg):
        with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
            assert c.request("pool-c", "status").final["status"]["pool"] == "hall"


def test_mqtt5_correlation_data_is_echoed_on_every_event(broker, bundles, tmp_path):
    cfg = write_config(tmp_path / "d.toml", broker.port, [bundles["text"]], device_id="corr")
    with running_service(cfg):
        listener = Listener(broker, ["edge-aigc/corr/res/x1"])
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = b"abc"
        listener.publish("edge-aigc/corr/cmd", json.dumps({
            "id": "x1", "action": "generate", "model": "tiny-lm",
            "params": {"prompt": "Hi", "max_new_tokens": 4}}).encode(), properties=props)
        events = []
        while not events or json.loads(events[-1].payload)["event"] != "result":
            events.append(listener.next())
        assert all(e.properties.CorrelationData == b"abc" for e in events)
        listener.close()


def test_systemd_unit_declares_what_the_service_relies_on():
    from tests.helpers import ROOT

    unit = (ROOT / "systemd" / "edge-aigc.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes",
                 "StateDirectory=edge-aigc", "LoadCredential=mqtt-password:", "MemoryMax=",
                 "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "ExecStart=/usr/local/bin/edge-aigc serve --config /etc/edge-aigc/device.toml"):
        assert line in unit, line
