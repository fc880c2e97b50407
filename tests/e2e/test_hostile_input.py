"""Hostile input over MQTT: every client mistake is answered ``bad_request`` (or the specific code
that fits), never ``internal``; answers reveal nothing of the device's files; the service goes on."""
from __future__ import annotations

import json

import pytest

from edge_aigc.remote.client import DeviceClient
from tests.helpers.service import Listener, running_service, write_config

G = b'"action": "generate", "model": "tiny-lm"'
CLIENT_CODES = {"bad_request", "unknown_model", "too_large"}


def gen(rid: str, params: bytes) -> bytes:
    return b'{"id": "' + rid.encode() + b'", ' + G + b', "params": ' + params + b"}"


# (name, payload, id the answer goes to or None for the errors topic, expected code)
HOSTILE = [
    ("lone high surrogate in the prompt", gen("s1", rb'{"prompt": "a\ud800b"}'), "s1", "bad_request"),
    ("lone low surrogate in the prompt", gen("s2", rb'{"prompt": "\udc00"}'), "s2", "bad_request"),
    ("surrogate in a key", rb'{"id": "s3", "action": "status", "\ud800": 1}', "s3", "bad_request"),
    ("surrogate in reply_to", rb'{"id": "s4", "action": "status", "reply_to": "x/\ud800"}', "s4", "bad_request"),
    ("surrogate in the model name", rb'{"id": "s5", "action": "generate", "model": "\ud800", "params": {}}',
     "s5", "bad_request"),
    ("surrogate in a stop string", gen("s6", rb'{"prompt": "x", "stop": ["\udfff"]}'), "s6", "bad_request"),
    ("surrogate in the id", rb'{"id": "\ud800", "action": "status"}', None, "bad_request"),
    ("NUL in the model name", rb'{"id": "n1", "action": "generate", "model": "tiny-lm\u0000", "params": {}}',
     "n1", "bad_request"),
    ("NUL in reply_to", rb'{"id": "n2", "action": "status", "reply_to": "a\u0000b"}', "n2", "bad_request"),
    ("NUL in a label", rb'{"id": "n3", "action": "generate", "model": "tiny-dcgan", "params": {"label": "a\u0000"}}',
     "n3", "bad_request"),
    ("NUL in the notes", rb'{"id": "n4", "action": "generate", "model": "tiny-synth", "params": {"notes": "\u0000"}}',
     "n4", "bad_request"),
    ("NaN", gen("j1", b'{"prompt": "x", "temperature": NaN}'), None, "bad_request"),
    ("Infinity", gen("j2", b'{"prompt": "x", "top_p": Infinity}'), None, "bad_request"),
    ("-Infinity", gen("j3", b'{"prompt": "x", "temperature": -Infinity}'), None, "bad_request"),
    ("a float that overflows", gen("j4", b'{"prompt": "x", "temperature": 1e999}'), "j4", "bad_request"),
    ("an integer of 5000 digits", gen("j5", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}"), None, "bad_request"),
    ("nesting 20000 deep", b"[" * 20000 + b"]" * 20000, None, "bad_request"),
    ("nesting 30 deep in params", gen("j7", b'{"prompt": "x", "stop": ' + b"[" * 30 + b"]" * 30 + b"}"),
     "j7", "bad_request"),
    ("a byte-order mark", b"\xef\xbb\xbf" + rb'{"id": "j8", "action": "status"}', None, "bad_request"),
    ("UTF-16", '{"id": "j9", "action": "status"}'.encode("utf-16"), None, "bad_request"),
    ("an empty payload", b"", None, "bad_request"),
    ("JSON null", b"null", None, "bad_request"),
    ("a JSON string", b'"status"', None, "bad_request"),
    ("a JSON number", b"42", None, "bad_request"),
    ("trailing garbage", rb'{"id": "j10", "action": "status"} x', None, "bad_request"),
    ("a truncated object", rb'{"id": "j11", "action": "sta', None, "bad_request"),
    ("the id as a number", b'{"id": 7, "action": "status"}', None, "bad_request"),
    ("the id as an object", b'{"id": {"a": 1}, "action": "status"}', None, "bad_request"),
    ("an id of 129 characters", b'{"id": "' + b"a" * 129 + b'", "action": "status"}', None, "bad_request"),
    ("action null", b'{"id": "t1", "action": null}', "t1", "bad_request"),
    ("action as a list", b'{"id": "t2", "action": ["status"]}', "t2", "bad_request"),
    ("the prompt as a list", gen("t3", b'{"prompt": ["a"]}'), "t3", "bad_request"),
    ("the prompt as null", gen("t4", b'{"prompt": null}'), "t4", "bad_request"),
    ("an empty prompt", gen("t5", b'{"prompt": ""}'), "t5", "bad_request"),
    ("a prompt over the context", gen("t6", b'{"prompt": "' + b"word " * 1600 + b'"}'), "t6", "bad_request"),
    ("max_new_tokens as a float", gen("t7", b'{"prompt": "x", "max_new_tokens": 1.5}'), "t7", "bad_request"),
    ("max_new_tokens as a string", gen("t8", b'{"prompt": "x", "max_new_tokens": "10"}'), "t8", "bad_request"),
    ("max_new_tokens as true", gen("t9", b'{"prompt": "x", "max_new_tokens": true}'), "t9", "bad_request"),
    ("a negative seed", gen("t10", b'{"prompt": "x", "seed": -1}'), "t10", "bad_request"),
    ("a seed of 2**40", gen("t11", b'{"prompt": "x", "seed": 1099511627776}'), "t11", "bad_request"),
    ("num_beams 9", gen("t12", b'{"prompt": "x", "num_beams": 9}'), "t12", "bad_request"),
    ("five stop strings", gen("t13", b'{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}'), "t13", "bad_request"),
    ("a stop string of a number", gen("t14", b'{"prompt": "x", "stop": [1]}'), "t14", "bad_request"),
    ("an empty stop string", gen("t15", b'{"prompt": "x", "stop": [""]}'), "t15", "bad_request"),
    ("count 0", b'{"id": "t16", "action": "generate", "model": "tiny-dcgan", "params": {"count": 0}}',
     "t16", "bad_request"),
    ("scale 17", b'{"id": "t17", "action": "generate", "model": "tiny-dcgan", "params": {"scale": 17}}',
     "t17", "bad_request"),
    ("label as a bool", b'{"id": "t18", "action": "generate", "model": "tiny-dcgan", "params": {"label": true}}',
     "t18", "bad_request"),
    ("label index out of range", b'{"id": "t19", "action": "generate", "model": "tiny-dcgan", '
     b'"params": {"label": 99}}', "t19", "bad_request"),
    ("empty notes", b'{"id": "t20", "action": "generate", "model": "tiny-synth", "params": {"notes": ""}}',
     "t20", "bad_request"),
    ("a gain of -1", b'{"id": "t21", "action": "generate", "model": "tiny-synth", '
     b'"params": {"notes": "A4:0.5", "gain": -1}}', "t21", "bad_request"),
    ("timeout_s 0", b'{"id": "t22", "action": "status", "timeout_s": 0}', "t22", "bad_request"),
    ("timeout_s as a string", b'{"id": "t23", "action": "status", "timeout_s": "5"}', "t23", "bad_request"),
    ("timeout_s true", b'{"id": "t24", "action": "status", "timeout_s": true}', "t24", "bad_request"),
    ("a model name of 300 characters", b'{"id": "t25", "action": "generate", "model": "' + b"m" * 300
     + b'", "params": {}}', "t25", "bad_request"),
    ("reply_to under $SYS", b'{"id": "t26", "action": "status", "reply_to": "$SYS/x"}', "t26", "bad_request"),
    ("cancel with a wildcard target", b'{"id": "t27", "action": "cancel", "target": "#"}', "t27", "bad_request"),
    ("messages to a model without a chat template",
     gen("c1", b'{"messages": [{"role": "user", "content": "hi"}]}'), "c1", "bad_request"),
    ("a message of an unknown role", gen("c2", b'{"messages": [{"role": "root", "content": "hi"}]}'),
     "c2", "bad_request"),
    ("empty messages", gen("c3", b'{"messages": []}'), "c3", "bad_request"),
    ("messages and a prompt", gen("c4", b'{"prompt": "x", "messages": [{"role": "user", "content": "hi"}]}'),
     "c4", "bad_request"),
    ("messages as a string", gen("c5", b'{"messages": "hi"}'), "c5", "bad_request"),
    ("neither prompt nor messages", gen("c6", b'{"max_new_tokens": 3}'), "c6", "bad_request"),
    ("load of a device path", b'{"id": "p1", "action": "load", "model": "/etc/shadow"}', "p1", "bad_request"),
    ("load of a missing device path", b'{"id": "p2", "action": "load", "model": "/etc/no-such-file"}',
     "p2", "bad_request"),
    ("load of a relative path", b'{"id": "p3", "action": "load", "model": "../../etc/passwd"}', "p3", "bad_request"),
    ("load of a bundle file name", b'{"id": "p4", "action": "load", "model": "text.eaigc"}', "p4", "unknown_model"),
    ("load of a name not installed", b'{"id": "p5", "action": "load", "model": "nope"}', "p5", "unknown_model"),
    ("unload of a model not loaded", b'{"id": "p6", "action": "unload", "model": "nope"}', "p6", "unknown_model"),
    ("generate on a device path", b'{"id": "p7", "action": "generate", "model": "/etc/passwd", "params": {}}',
     "p7", "bad_request"),
]


@pytest.fixture(scope="module")
def service(broker, bundles, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("hostile") / "device.toml", broker.port,
                       [bundles["text"], bundles["image"], bundles["audio"]], device_id="hostile")
    with running_service(cfg) as svc:
        yield svc


@pytest.fixture(scope="module")
def listener(broker, service):
    listen = Listener(broker, ["edge-aigc/hostile/errors", "edge-aigc/hostile/res/+"])
    yield listen
    listen.close()


def _answer(listener, payload: bytes, rid: str | None) -> dict:
    topic = f"edge-aigc/hostile/res/{rid}" if rid else "edge-aigc/hostile/errors"
    listener.publish("edge-aigc/hostile/cmd", payload)
    return json.loads(listener.next(topic=topic, event="error").payload)


@pytest.mark.parametrize("payload,rid,code", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_a_client_error_never_internal(broker, service, listener, payload, rid, code):
    error = _answer(listener, payload, rid)
    assert error["code"] == code, error
    assert error["code"] in CLIENT_CODES
    assert error["message"] and "/tmp" not in error["message"] and service.cfg.state_dir not in error["message"]
    assert service.healthy


def test_a_device_path_load_says_nothing_about_the_file(listener):
    exists = _answer(listener, b'{"id": "q1", "action": "load", "model": "/etc/passwd"}', "q1")
    missing = _answer(listener, b'{"id": "q2", "action": "load", "model": "/etc/passwd-no"}', "q2")
    assert exists["message"].replace("/etc/passwd", "X") == missing["message"].replace("/etc/passwd-no", "X")
    assert "root:" not in exists["message"]


def test_nul_in_a_prompt_is_text_and_the_service_goes_on(broker, service):
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        r = client.request("hostile", "generate", "tiny-lm", {"prompt": "a\x00b", "max_new_tokens": 3})
        assert r.ok, r.final
        assert client.request("hostile", "generate", "tiny-lm", {"prompt": "Hello", "max_new_tokens": 3}).ok
    assert service.healthy
