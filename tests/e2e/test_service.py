"""The MQTT device service against a real Mosquitto on loopback."""
from __future__ import annotations

import io
import time
import json
import wave

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from PIL import Image

from edge_aigc.errors import ConfigError
from edge_aigc.remote.client import DeviceClient
from edge_aigc.serve.config import load_config, read_password
from tests.helpers.service import Listener, running_service, write_config


@pytest.fixture(scope="module")
def service(broker, bundles, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("svc") / "device.toml", broker.port,
                       [bundles["text"], bundles["image"], bundles["audio"], bundles["slow"]],
                       limits="max_payload_bytes = 4096\nqueue_size = 4")
    with running_service(cfg) as svc:
        yield svc


@pytest.fixture
def client(broker, service):
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
        yield c


@pytest.mark.parametrize("protocol", [5, 311], ids=["mqtt5", "mqtt3.1.1"])
def test_text_round_trip_streams_tokens(broker, service, protocol):
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}", protocol=protocol) as c:
        streamed = []
        r = c.request("dev", "generate", "tiny-lm", {"prompt": "The quick brown", "max_new_tokens": 16,
                                                     "temperature": 0.0}, on_event=streamed.append)
    kinds = [e["event"] for e in streamed]
    assert kinds[0] == "accepted" and kinds[-1] == "result" and "token" in kinds
    assert "".join(e["text"] for e in streamed if e["event"] == "token") == r.final["text"]
    assert r.final["device"] == "dev" and r.final["meta"]["generated_tokens"] >= 1


@pytest.mark.parametrize("protocol", [5, 311], ids=["mqtt5", "mqtt3.1.1"])
def test_image_and_audio_round_trips_deliver_verified_bytes(broker, service, protocol):
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}", protocol=protocol) as c:
        img = c.request("dev", "generate", "tiny-dcgan", {"count": 4, "seed": 1, "label": "b"})
        wav = c.request("dev", "generate", "tiny-synth", {"notes": "A4:0.25 C5:0.25"})
    [d] = img.final["data"]
    assert d["topic"] == f"edge-aigc/dev/data/{img.id}" and d["content_type"] == "image/png"
    assert Image.open(io.BytesIO(img.data[d["topic"]])).size == (62, 62)
    [d] = wav.final["data"]
    with wave.open(io.BytesIO(wav.data[d["topic"]])) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 4000


def test_mqtt5_response_topic_and_correlation_data_are_honoured(broker, service):
    listener = Listener(broker, ["apps/my-app/inbox"])
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = "apps/my-app/inbox", b"\x01corr"
    listener.publish("edge-aigc/dev/cmd", json.dumps({"id": "c5", "action": "status"}).encode(),
                     properties=props)
    msg = listener.next(topic="apps/my-app/inbox")
    assert json.loads(msg.payload)["event"] == "result" and msg.properties.CorrelationData == b"\x01corr"
    listener.close()


BAD_INPUTS = [
    ("not json", b"hello", "errors", "bad_request"),
    ("json array", b"[1, 2]", "errors", "bad_request"),
    ("invalid utf-8", b'{"id": "u1", "action": "status"\xff}', "errors", "bad_request"),
    ("missing id", b'{"action": "status"}', "errors", "bad_request"),
    ("id with a wildcard", b'{"id": "a/+", "action": "status"}', "errors", "bad_request"),
    ("oversize payload", b'{"id": "big", "pad": "' + b"x" * 5000 + b'"}', "errors", "too_large"),
    ("unknown action", b'{"id": "b1", "action": "dance"}', "b1", "bad_request"),
    ("unknown field", b'{"id": "b2", "action": "status", "colour": 1}', "b2", "bad_request"),
    ("unknown model", b'{"id": "b3", "action": "generate", "model": "nope", "params": {"prompt": "x"}}',
     "b3", "unknown_model"),
    ("params not an object", b'{"id": "b4", "action": "generate", "model": "tiny-lm", "params": [1]}',
     "b4", "bad_request"),
    ("wrong param type", b'{"id": "b5", "action": "generate", "model": "tiny-lm", "params": {"prompt": 5}}',
     "b5", "bad_request"),
    ("negative max_new_tokens", b'{"id": "b6", "action": "generate", "model": "tiny-lm", '
     b'"params": {"prompt": "x", "max_new_tokens": -1}}', "b6", "bad_request"),
    ("huge max_new_tokens", b'{"id": "b7", "action": "generate", "model": "tiny-lm", '
     b'"params": {"prompt": "x", "max_new_tokens": 99999999}}', "b7", "bad_request"),
    ("unknown param", b'{"id": "b8", "action": "generate", "model": "tiny-lm", '
     b'"params": {"prompt": "x", "turbo": true}}', "b8", "bad_request"),
    ("missing model", b'{"id": "b9", "action": "generate", "params": {"prompt": "x"}}', "b9", "bad_request"),
    ("reply_to with a wildcard", b'{"id": "b10", "action": "status", "reply_to": "x/#"}', "b10", "bad_request"),
    ("cancel without target", b'{"id": "b11", "action": "cancel"}', "b11", "bad_request"),
    ("bad label", b'{"id": "b12", "action": "generate", "model": "tiny-dcgan", "params": {"label": "zebra"}}',
     "b12", "bad_request"),
    ("bad notes", b'{"id": "b13", "action": "generate", "model": "tiny-synth", "params": {"notes": "Q9"}}',
     "b13", "bad_request"),
]


@pytest.mark.parametrize("payload,where,code", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_an_error_and_the_next_request_succeeds(broker, service, client, payload, where, code):
    topic = "edge-aigc/dev/errors" if where == "errors" else f"edge-aigc/dev/res/{where}"
    listener = Listener(broker, [topic])
    listener.publish("edge-aigc/dev/cmd", payload)
    error = json.loads(listener.next(topic=topic, event="error").payload)
    listener.close()
    assert error["code"] == code, error
    assert error["message"]
    ok = client.request("dev", "generate", "tiny-lm", {"prompt": "Hello", "max_new_tokens": 3})
    assert ok.ok and service.healthy


def test_bad_parameters_are_refused_before_the_queue_and_a_resent_id_gets_the_same_error(broker, service):
    """Parameters are checked when the request arrives: the first event is the error, never an
    ``accepted`` that would promise a run; the worker never sees the job."""
    listener = Listener(broker, ["edge-aigc/dev/res/hot-1"])
    rejected, done, failed = service.worker.stats.rejected, service.worker.stats.done, service.worker.stats.failed
    payload = json.dumps({"id": "hot-1", "action": "generate", "model": "tiny-lm",
                          "params": {"prompt": "x", "temperature": 9}}).encode()
    try:
        for _ in range(2):
            listener.publish("edge-aigc/dev/cmd", payload)
            first = json.loads(listener.next(topic="edge-aigc/dev/res/hot-1").payload)
            assert (first["event"], first["code"]) == ("error", "bad_request") and "temperature" in first["message"]
    finally:
        listener.close()
    stats = service.worker.stats
    assert (stats.rejected, stats.done, stats.failed) == (rejected + 1, done, failed)  # counted once, as refused


def test_redelivered_request_id_is_not_run_twice(client, service):
    first = client.request("dev", "generate", "tiny-lm", {"prompt": "Once", "max_new_tokens": 8, "seed": 1},
                           request_id="dup-1")
    done = service.worker.stats.done
    again = client.request("dev", "generate", "tiny-lm", {"prompt": "Once", "max_new_tokens": 8, "seed": 1},
                           request_id="dup-1")
    assert again.final["text"] == first.final["text"]
    assert [e["event"] for e in again.events] == ["result"], "re-sent result, no accepted/tokens"
    assert service.worker.stats.done == done


def test_redelivered_image_request_resends_its_data(client):
    a = client.request("dev", "generate", "tiny-dcgan", {"seed": 3}, request_id="dup-img")
    b = client.request("dev", "generate", "tiny-dcgan", {"seed": 3}, request_id="dup-img")
    assert a.data == b.data and len(b.data) == 1


def slow(prompt="The", tokens=2000):
    """A request that runs for seconds: plain greedy decoding of an untrained model (drafts would
    take its repeats many tokens a step)."""
    return {"prompt": prompt, "max_new_tokens": tokens, "temperature": 0.0, "speculation": "off"}


def test_cancel_stops_a_running_generation(broker, client):
    listener = Listener(broker, ["edge-aigc/dev/res/long-1"])
    listener.publish("edge-aigc/dev/cmd", json.dumps({"id": "long-1", "action": "generate",
                                                      "model": "slow-lm", "params": slow()}).encode())
    listener.next(event="accepted")
    time.sleep(0.2)
    reply = client.request("dev", "cancel", target="long-1")
    assert reply.final["cancelled"] is True
    error = json.loads(listener.next(event="error").payload)
    assert error["code"] == "cancelled"
    listener.close()


def test_request_past_its_deadline_times_out(client):
    r = client.request("dev", "generate", "slow-lm", slow(), timeout_s=0.3)
    assert r.final["event"] == "error" and r.final["code"] == "timeout"


def test_full_queue_answers_busy(broker, client, service):
    listener = Listener(broker, ["edge-aigc/dev/res/#"])
    ids = [f"q{i}" for i in range(service.cfg.limits.queue_size + 2)]
    for rid in ids:  # one runs, queue_size wait, the rest are refused
        listener.publish("edge-aigc/dev/cmd", json.dumps({"id": rid, "action": "generate", "model": "slow-lm",
                                                          "params": slow(tokens=400)}).encode())
    busy = json.loads(listener.next(event="error", timeout=20).payload)
    # The last is refused, or the one before it if the worker had not yet taken the first.
    assert busy["code"] == "busy" and busy["id"] in ids[-2:], busy
    for rid in ids[:-1]:
        client.request("dev", "cancel", target=rid)
    listener.close()


def test_status_and_models_describe_the_device(client):
    status = client.request("dev", "status").final
    assert status["status"]["state"] == "online" and "tiny-lm" in status["status"]["models"]
    assert status["metrics"]["done"] >= 0
    models = {m["name"]: m for m in client.request("dev", "models").final["models"]}
    assert models["tiny-dcgan"]["task"] == "image-generation"


def test_unload_then_load_a_model(client, bundles):
    assert "tiny-synth" not in client.request("dev", "unload", "tiny-synth").final["loaded"]
    r = client.request("dev", "generate", "tiny-synth", {"notes": "C4:0.1"})
    assert r.ok, "an installed/known model loads on demand"
    client.request("dev", "unload", "tiny-synth")
    # by name: clients never name device files (a path is bad_request, see test_hostile_input.py)
    assert client.request("dev", "load", "tiny-synth").final["model"] == "tiny-synth"
    assert client.request("dev", "load", str(bundles["audio"])).final["code"] == "bad_request"


def test_status_is_retained_and_metrics_are_published(broker, service):
    listener = Listener(broker, ["edge-aigc/dev/status", "edge-aigc/dev/metrics"])
    status = listener.next(topic="edge-aigc/dev/status")
    assert status.retain and json.loads(status.payload)["state"] == "online"
    metrics = json.loads(listener.next(topic="edge-aigc/dev/metrics").payload)
    assert {"queue_depth", "done", "failed", "latency_ms", "rss_mb"} <= set(metrics)
    listener.close()


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "device.toml"
    bad.write_text('device_id = "d"\nmodels = ["m"]\n[mqtt]\nurl = "http://x"\n')
    with pytest.raises(ConfigError, match="key 'mqtt.url'"):
        load_config(bad)
    bad.write_text('device_id = "d"\nmodels = ["m"]\n[limits]\nqueue_size = 0\n')
    with pytest.raises(ConfigError, match="key 'limits.queue_size'"):
        load_config(bad)
    bad.write_text('device_id = "d/x"\nmodels = ["m"]\n')
    with pytest.raises(ConfigError, match="key 'device_id'"):
        load_config(bad)
    bad.write_text('device_id = "d"\nmodels = ["m"]\npasword = "x"\n')
    with pytest.raises(ConfigError, match="key 'pasword': unknown key"):
        load_config(bad)


def test_password_comes_from_a_file_or_the_systemd_credential(tmp_path, monkeypatch):
    cfg_path = write_config(tmp_path / "device.toml", 1883, [], mqtt_extra='username = "dev"')
    cfg_path.write_text(cfg_path.read_text().replace("models = []", 'models = ["x"]'))
    cfg = load_config(cfg_path).mqtt
    assert read_password(cfg) is None
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert read_password(cfg) == "s3cret"


def test_client_gets_a_clear_error_for_an_unreachable_broker():
    import socket

    # a port held bound but not listening: refused for sure. A port merely free may be picked
    # as the client's own source port, and TCP then connects the socket to itself (seen in CI)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="cannot reach MQTT broker"):
            DeviceClient(f"mqtt://127.0.0.1:{held.getsockname()[1]}").connect(timeout=2)


def test_mqtt311_listener_is_a_plain_client(broker, service):
    listener = Listener(broker, ["edge-aigc/dev/status"], protocol=mqtt.MQTTv311)
    assert json.loads(listener.next().payload)["device"] == "dev"
    listener.close()


def test_serve_refuses_unsigned_bundles_unless_the_config_allows_them(bundles, tmp_path):
    from edge_aigc.errors import SignatureError
    from edge_aigc.serve.app import build_service

    strict = write_config(tmp_path / "strict.toml", 1883, [bundles["image"]], allow_unsigned=False)
    with pytest.raises(SignatureError, match="not signed"):
        build_service(load_config(strict))
    lax = write_config(tmp_path / "lax.toml", 1883, [bundles["image"]])
    runtime, _ = build_service(load_config(lax))
    assert runtime.loaded() == ["tiny-dcgan"]
    runtime.close()


def test_with_no_pubkey_bundles_must_be_signed_by_the_zoo_key(bundles, keypair, tmp_path):
    from edge_aigc import load_bundle
    from edge_aigc.bundle import signing
    from edge_aigc.bundle.load import resign_bundle
    from edge_aigc.errors import SignatureError
    from edge_aigc.serve.app import build_service
    from edge_aigc.zoo import zoo_bundle

    zoo = write_config(tmp_path / "zoo.toml", 1883, [zoo_bundle("digits", "x86-avx2").path], allow_unsigned=False)
    runtime, _ = build_service(load_config(zoo))
    assert runtime.loaded() == ["digits"]
    runtime.close()
    with load_bundle(bundles["image"]) as b:
        resign_bundle(b, tmp_path / "mine.eaigc", signing.load_private_key(keypair[0]))
    mine = write_config(tmp_path / "mine.toml", 1883, [tmp_path / "mine.eaigc"], allow_unsigned=False)
    with pytest.raises(SignatureError):
        build_service(load_config(mine))
    pinned = write_config(tmp_path / "pinned.toml", 1883, [tmp_path / "mine.eaigc"], allow_unsigned=False,
                          pubkey=str(keypair[1]))
    runtime, _ = build_service(load_config(pinned))
    assert runtime.loaded() == ["tiny-dcgan"]
    runtime.close()


@pytest.mark.parametrize("extra,key", [("require_signature = true\n", "require_signature"),
                                       ('allow_unsigned = true\npubkey = "k.pub"\n', "allow_unsigned")])
def test_signature_settings_that_contradict_the_default_are_config_errors(tmp_path, extra, key):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'device_id = "d"\nmodels = ["m"]\n{extra}')
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(bad)
