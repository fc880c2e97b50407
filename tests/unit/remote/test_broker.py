"""The broker fixture is a real Mosquitto: prove it with a paho round trip."""
import queue

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt3.1.1", "mqtt5"])
def test_paho_publish_subscribe_round_trip_through_real_mosquitto(broker, protocol):
    got: queue.Queue = queue.Queue()
    subscribed = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fixture-test-{protocol}",
                         protocol=protocol)
    client.on_subscribe = lambda c, u, mid, rc, props: subscribed.put(mid)
    client.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload, msg.qos))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("edge-aigc/test/echo", qos=1)
        subscribed.get(timeout=5)
        client.publish("edge-aigc/test/echo", b"\x00hello\xff", qos=1).wait_for_publish(5)
        assert got.get(timeout=5) == ("edge-aigc/test/echo", b"\x00hello\xff", 1)
    finally:
        client.loop_stop()
        client.disconnect()


def test_broker_fixture_runs_mosquitto_on_loopback(broker):
    assert broker.host == "127.0.0.1"
    assert broker.proc.poll() is None
    cmdline = open(f"/proc/{broker.pid}/cmdline", "rb").read().split(b"\0")
    assert cmdline[0].endswith(b"mosquitto") and cmdline[-2].endswith(b"mosquitto.conf")
    assert f"listener {broker.port} 127.0.0.1" in (broker.workdir / "mosquitto.conf").read_text()
