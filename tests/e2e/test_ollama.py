"""The Ollama-compatible routes, driven by the official ``ollama`` client making the calls Home
Assistant's Ollama integration makes (list the models, then a streamed chat with
``keep_alive`` and ``num_ctx``), and by raw requests for what a client can get wrong."""
from __future__ import annotations

import json

import httpx
import ollama
import pytest

from tests.helpers.service import running_service, write_config

TOKEN = "ollama-token-0123456789abcdef"
TURNS = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Once upon a time"}]
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def service(broker, bundles, chat_lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("ollama")
    (d / "tokens").write_text(TOKEN + "\n")
    cfg = write_config(d / "device.toml", broker.port, [chat_lm[1], bundles["text"], bundles["image"]],
                       device_id="llama-like", http={"enabled": True, "listen": "127.0.0.1:0",
                                                     "tokens_file": str(d / "tokens")})
    with running_service(cfg) as svc:
        yield svc


@pytest.fixture(scope="module")
def base(service):
    return f"http://127.0.0.1:{service.http.port}"


@pytest.fixture
def client(base):
    return ollama.Client(host=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)


def test_home_assistants_calls_list_then_a_streamed_chat(service, client):
    names = [m.model for m in client.list().models]
    assert names == ["chatty", "tiny-lm"]  # the chat models; tiny-dcgan draws
    parts = list(client.chat(model="chatty", messages=TURNS, stream=True, keep_alive=-1,
                             options={**GREEDY, "num_ctx": 8192}))
    direct = service.rt.generate("chatty", messages=TURNS, temperature=0, max_new_tokens=12)
    assert "".join(p.message.content for p in parts) == direct.text
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    last = parts[-1]
    assert last.eval_count == direct.meta["generated_tokens"] and last.prompt_eval_count == direct.meta["prompt_tokens"]
    assert last.done_reason == ("length" if direct.meta["finish_reason"] == "length" else "stop")
    assert last.total_duration > 0 and last.message.role == "assistant"


def test_chat_without_streaming_answers_once(service, client):
    reply = client.chat(model="chatty:latest", messages=TURNS, options=GREEDY)  # Ollama's tag is understood
    assert reply.done and reply.message.content == service.rt.generate(
        "chatty", messages=TURNS, temperature=0, max_new_tokens=12).text


def test_generate_goes_through_the_template_unless_raw(service, client):
    templated = client.generate(model="chatty", prompt="Once upon a time", system="You are brief.", options=GREEDY)
    assert templated.response == service.rt.generate("chatty", messages=TURNS, temperature=0, max_new_tokens=12).text
    raw = client.generate(model="tiny-lm", prompt="Once upon a time", raw=True, options=GREEDY)
    assert raw.response == service.rt.generate("tiny-lm", prompt="Once upon a time", temperature=0,
                                               max_new_tokens=12).text
    parts = client.generate(model="tiny-lm", prompt="Once upon a time", stream=True, options=GREEDY)
    streamed = "".join(p.response for p in parts)
    assert streamed == raw.response


def test_a_request_with_nothing_to_say_loads_the_model(client):
    assert client.generate(model="chatty").done_reason == "load"
    assert client.chat(model="chatty", messages=[]).done_reason == "load"


def test_show_ps_version_and_pull(service, client):
    shown = client.show("chatty")
    assert "<|im_start|>" in shown.template and shown.details.format == "onnx" and "completion" in shown.capabilities
    assert shown.modelinfo["context_length"] == service.rt.model("chatty").task.max_context > 0
    assert [m.model for m in client.ps().models] == ["chatty", "tiny-lm"]
    assert client.pull("chatty").status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("llama3.2:3b")
    assert info.value.status_code == 404 and "downloads nothing" in info.value.error


@pytest.mark.parametrize("call,status,words", [
    (lambda c: c.chat(model="nope", messages=TURNS), 404, "not found"),
    (lambda c: c.chat(model="tiny-dcgan", messages=TURNS), 400, "not a chat model"),
    (lambda c: c.chat(model="chatty", messages=TURNS, tools=[{"type": "function", "function": {
        "name": "turn_on", "description": "", "parameters": {"type": "object", "properties": {}}}}]), 400, "tools"),
    (lambda c: c.chat(model="chatty", messages=TURNS, options={"mirostat": 2}), 400, "mirostat"),
    (lambda c: c.chat(model="chatty", messages=TURNS, options={"num_predict": 0}), 400, "num_predict"),
    (lambda c: c.chat(model="chatty", messages=TURNS, options={"temperature": 99}), 400, "temperature"),
    (lambda c: c.chat(model="chatty", messages=[{"role": "tool", "content": "42"}]), 400, "tool"),
    (lambda c: c.chat(model="chatty", messages=[{"role": "user", "content": "hi", "images": ["aGk="]}]), 400, "images"),
    (lambda c: c.chat(model="chatty", messages=TURNS, keep_alive="forever"), 400, "keep_alive"),
    (lambda c: c.generate(model="chatty", prompt="x", options={"num_ctx": -1}), 400, "num_ctx"),
])
def test_what_a_client_gets_wrong_is_an_ollama_error_naming_it(client, call, status, words):
    with pytest.raises(ollama.ResponseError) as info:
        call(client)
    assert info.value.status_code == status and words in info.value.error


SWITCH = {"type": "object", "additionalProperties": False, "required": ["name", "on"],
          "properties": {"name": {"enum": ["kitchen", "porch"]}, "on": {"type": "boolean"}}}


def test_format_holds_the_answer_to_a_json_schema(client):
    reply = client.chat(model="chatty", messages=TURNS, format=SWITCH, options={"temperature": 0, "num_predict": 64})
    value = json.loads(reply.message.content)
    assert value["name"] in ("kitchen", "porch") and isinstance(value["on"], bool) and reply.done_reason == "stop"
    parts = client.generate(model="chatty", prompt="Porch?", format=SWITCH, stream=True,
                            options={"temperature": 0.9, "seed": 4, "num_predict": 64})
    assert json.loads("".join(p.response for p in parts))["name"] in ("kitchen", "porch")


@pytest.mark.parametrize("body", [b'{"model": "chatty", "messages": [], "format": "yaml"}',
                                  b'{"model": "chatty", "messages": [{"role": "user", "content": "hi"}], '
                                  b'"format": {"type": "object", "dependentSchemas": {}}}',
                                  b"{not json", b"[]", b'{"model": 7}', b'{"model": "chatty", "messages": "hi"}',
                                  b'{"model": "chatty", "messages": [{"role": ["user"]}]}',
                                  b'{"model": "chatty", "messages": [], "stream": "yes"}',
                                  b'{"model": "chatty", "options": [1]}', b'{"model": "chatty", "bogus": 1}'])
def test_malformed_bodies_are_400s_in_ollamas_shape(base, body):
    r = httpx.post(f"{base}/api/chat", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text


def test_auth_and_unknown_routes_answer_in_ollamas_shape(base):
    r = httpx.get(f"{base}/api/tags", timeout=30)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=base, timeout=30).list()
    assert info.value.status_code == 401
    r = httpx.get(f"{base}/api/nothing", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    assert json.loads(httpx.get(f"{base}/api/version", headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=30).text)["version"]


def test_clients_of_allow_from_need_no_token_as_home_assistant_sends_none(broker, chat_lm, tmp_path):
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    cfg = write_config(tmp_path / "device.toml", broker.port, [chat_lm[1]], device_id="ha-trusted",
                       http={"enabled": True, "listen": "127.0.0.1:0", "tokens_file": str(tmp_path / "tokens"),
                             "allow_from": ["127.0.0.0/8"]})
    with running_service(cfg) as svc:
        tokenless = ollama.Client(host=f"http://127.0.0.1:{svc.http.port}", timeout=60)
        assert [m.model for m in tokenless.list().models] == ["chatty"]
        assert tokenless.chat(model="chatty", messages=TURNS, options=GREEDY).done
