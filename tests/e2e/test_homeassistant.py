"""Home Assistant MQTT discovery against a real Mosquitto: the payload holds only keys Home
Assistant documents for each component, its templates render on the device's real
messages, the entities drive the models, and ``edge-aigc forget`` retracts it all."""
from __future__ import annotations

import io
import json
import queue
import subprocess
import sys
import wave

import jinja2
import pytest
from PIL import Image

from edge_aigc.serve.config import load_config
from tests.helpers.service import Listener, running_service, write_config

# The options Home Assistant's MQTT docs list for each component (www.home-assistant.io/integrations/
# <component>.mqtt), plus "p" (platform) of device-based discovery.
COMMON = {"p", "name", "unique_id", "availability", "availability_mode", "availability_template",
          "availability_topic", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
          "json_attributes_template", "json_attributes_topic", "default_entity_id", "qos",
          "payload_available", "payload_not_available"}
DOCUMENTED = {
    "sensor": COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
                        "suggested_display_precision", "state_class", "state_topic", "unit_of_measurement",
                        "value_template"},
    "text": COMMON | {"command_template", "command_topic", "max", "min", "mode", "pattern", "retain",
                      "state_topic", "value_template"},
    "button": COMMON | {"command_template", "command_topic", "device_class", "payload_press", "retain"},
    "image": COMMON | {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
}
REQUIRED = {"sensor": {"state_topic"}, "text": {"command_topic"}, "button": {"command_topic"},
            "image": {"image_topic"}}
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "model_id", "name", "serial_number",
               "suggested_area", "sw_version", "hw_version", "via_device", "configuration_url"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
ROOT_KEYS = {"dev", "o", "cmps", "availability", "qos", "state_topic", "command_topic", "encoding"}
DISCOVERY = "homeassistant/device/edge_aigc_ha_dev/config"
HA = "edge-aigc/ha.dev/ha"


@pytest.fixture(scope="module")
def config(broker, bundles, chat_lm, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("ha") / "device.toml", broker.port,
                        [chat_lm[1], bundles["image"], bundles["audio"]], device_id="ha.dev",
                        homeassistant={"enabled": True})


@pytest.fixture(scope="module")
def service(config):
    with running_service(config) as svc:
        yield svc


@pytest.fixture
def listen(broker, service):
    made = []

    def make(*topics: str) -> Listener:
        made.append(Listener(broker, list(topics)))
        return made[-1]
    yield make
    for listener in made:
        listener.close()


def render(template: str, payload: bytes) -> str:
    return jinja2.Environment().from_string(template).render(value_json=json.loads(payload))


def test_off_unless_enabled(tmp_path):
    cfg = load_config(write_config(tmp_path / "device.toml", 1, ["digits"]))
    assert not cfg.homeassistant.enabled and cfg.homeassistant.discovery_prefix == "homeassistant"


def test_discovery_is_retained_and_holds_only_documented_keys(listen):
    listen(DISCOVERY).next(topic=DISCOVERY)  # published (live or retained, by who came first) …
    msg = listen(DISCOVERY).next(topic=DISCOVERY)  # … so a later subscriber gets the retained copy
    assert msg.retain
    body = json.loads(msg.payload)
    assert set(body) <= ROOT_KEYS and set(body["dev"]) <= DEVICE_KEYS and set(body["o"]) <= ORIGIN_KEYS
    assert body["o"]["name"] == "edge-aigc" and body["dev"]["identifiers"] == ["edge_aigc_ha_dev"]
    platforms = {}
    for key, cmp in body["cmps"].items():
        platform = cmp["p"]
        assert set(cmp) <= DOCUMENTED[platform], (key, set(cmp) - DOCUMENTED[platform])
        assert REQUIRED[platform] <= set(cmp), key
        platforms[key] = platform
    assert len({c["unique_id"] for c in body["cmps"].values()}) == len(body["cmps"])
    assert {k: v for k, v in platforms.items() if v != "sensor"} == {
        "prompt": "text", "draw": "button", "last_image": "image", "play": "button"}
    assert {"queue_depth", "last_latency", "rss", "answer"} <= set(platforms)


def test_availability_is_bound_to_the_retained_status(listen):
    body = json.loads(listen(DISCOVERY).next(topic=DISCOVERY).payload)
    [avty] = body["availability"]
    status = listen(avty["topic"]).next(topic=avty["topic"])
    assert avty["topic"] == "edge-aigc/ha.dev/status" and status.retain
    assert render(avty["value_template"], status.payload) == avty["payload_available"] == "online"


def test_sensor_templates_render_on_the_real_metrics(listen):
    body = json.loads(listen(DISCOVERY).next(topic=DISCOVERY).payload)
    metrics = listen("edge-aigc/ha.dev/metrics").next(topic="edge-aigc/ha.dev/metrics").payload
    for key in ("queue_depth", "rss"):
        cmp = body["cmps"][key]
        assert cmp["state_topic"] == "edge-aigc/ha.dev/metrics"
        assert float(render(cmp["value_template"], metrics)) >= 0


def test_the_prompt_entity_asks_the_text_model_and_the_answer_sensor_shows_it(service, listen):
    watch = listen(f"{HA}/#")
    watch.publish(f"{HA}/prompt/set", b"Once upon a time")
    answer = json.loads(watch.next(topic=f"{HA}/answer", timeout=60).payload)
    expected = service.rt.generate("chatty", messages=[{"role": "user", "content": "Once upon a time"}]).text
    assert answer["text"] == expected and answer["state"] == (expected[:255] or "(empty)")
    assert answer["model"] == "chatty"
    body = json.loads(listen(DISCOVERY).next(topic=DISCOVERY).payload)
    attrs = json.loads(render(body["cmps"]["answer"]["json_attributes_template"],
                              json.dumps(answer).encode()))
    assert attrs == {"text": expected, "model": "chatty"}
    assert listen(f"{HA}/prompt").next(topic=f"{HA}/prompt").payload == b"Once upon a time"  # retained


def test_the_buttons_draw_and_play(listen):
    watch = listen(f"{HA}/image", f"{HA}/audio")
    watch.publish(f"{HA}/draw/press", b"PRESS")
    image = Image.open(io.BytesIO(watch.next(topic=f"{HA}/image", timeout=60).payload))
    assert image.format == "PNG" and image.width > 28
    watch.publish(f"{HA}/play/press", b"PRESS")
    with wave.open(io.BytesIO(watch.next(topic=f"{HA}/audio", timeout=60).payload)) as w:
        assert w.getnframes() > 0


def test_discovery_is_published_again_when_home_assistant_comes_online(listen):
    watch = listen(DISCOVERY)
    assert watch.next(topic=DISCOVERY).retain  # the retained copy
    watch.publish("homeassistant/status", b"online")
    again = watch.next(topic=DISCOVERY)
    assert not again.retain and json.loads(again.payload)["cmps"]


def test_forget_retracts_the_device(config, listen, broker):
    watch = listen(DISCOVERY)
    watch.next(topic=DISCOVERY)
    done = subprocess.run([sys.executable, "-m", "edge_aigc", "forget", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert watch.next(topic=DISCOVERY).payload == b""  # the empty payload removes the device
    fresh = listen(DISCOVERY, f"{HA}/answer")
    with pytest.raises(queue.Empty):  # nothing retained is left
        fresh.next(timeout=1.0)
