"""The OpenAI-compatible HTTP API, driven by the official ``openai`` client and by curl.

The service runs in this process with MQTT and HTTP both on (loopback only), so the tests
can also check that the two front ends share one queue.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import wave

import httpx
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from edge_aigc.errors import ConfigError
from edge_aigc.serve.app import build_service
from edge_aigc.serve.config import load_config
from tests.helpers.service import Listener, running_service, serve_process, write_config
from tests.helpers.tls_certs import make_pki

TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "other-token-0123456789abcdef"   # a second client: its own sessions and prefixes
TURNS = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def service(broker, bundles, chat_lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    (d / "tokens").write_text(f"# one token per line\n{TOKEN}\n{OTHER_TOKEN}\n")
    cfg = write_config(d / "device.toml", broker.port,
                       [chat_lm[1], bundles["text"], bundles["image"], bundles["audio"], bundles["slow"]],
                       device_id="web", limits="queue_size = 2\nmax_payload_bytes = 8192",
                       http={"enabled": True, "listen": "127.0.0.1:0", "tokens_file": str(d / "tokens")})
    with running_service(cfg) as svc:
        yield svc


def base_url(service) -> str:
    return f"http://127.0.0.1:{service.http.port}"


@pytest.fixture(scope="module")
def base(service):
    return base_url(service)


@pytest.fixture
def client(base):
    with openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0, timeout=120) as c:
        yield c


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "120", *args], capture_output=True, text=True, timeout=130)


def wait_idle(service, timeout: float = 60.0) -> None:
    """Until nothing runs or waits (bounded): requests of one test never slow the next."""
    deadline = time.monotonic() + timeout
    while (service.worker.busy or service.worker.queue_depth) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not service.worker.busy and service.worker.queue_depth == 0


# -- chat and completions ------------------------------------------------------------------
def test_chat_completion_answers_what_the_runtime_answers(service, client):
    reply = client.chat.completions.create(model="chatty", messages=TURNS, temperature=0, max_tokens=12)
    direct = service.rt.generate("chatty", messages=TURNS, temperature=0, max_new_tokens=12)
    [choice] = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == direct.text
    assert choice.finish_reason == ("length" if direct.meta["finish_reason"] == "length" else "stop")
    assert reply.usage.prompt_tokens == direct.meta["prompt_tokens"]
    assert reply.usage.completion_tokens == direct.meta["generated_tokens"]
    assert reply.object == "chat.completion" and reply.model == "chatty" and reply.id.startswith("chatcmpl-")


def test_a_resent_conversation_reuses_its_prefix_for_the_same_token_only(base, client):
    ask = dict(model="chatty", temperature=0, max_tokens=6)
    turns = [{"role": "system", "content": "You are brief. You know the hall, porch and attic lights."},
             {"role": "user", "content": "Once upon a time"}]
    first = client.chat.completions.create(messages=turns, **ask)
    turns += [{"role": "assistant", "content": first.choices[0].message.content},
              {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(messages=turns, **ask)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    with openai.OpenAI(base_url=f"{base}/v1", api_key=OTHER_TOKEN, max_retries=0, timeout=120) as other:
        theirs = other.chat.completions.create(messages=turns, **ask)
    assert theirs.usage.prompt_tokens_details.cached_tokens == 0  # never another token's cache
    assert theirs.choices[0].message.content == second.choices[0].message.content


def test_streaming_chat_sends_the_same_text_in_pieces_then_usage(client):
    ask = dict(model="chatty", messages=TURNS, temperature=0, max_tokens=12)
    whole = client.chat.completions.create(**ask).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces) == whole
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 2
    assert len({c.id for c in chunks}) == 1


def test_response_format_holds_the_answer_to_json(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["room"],
              "properties": {"room": {"enum": ["hall", "porch", "attic"]}}}
    reply = client.chat.completions.create(model="chatty", messages=TURNS, temperature=0, max_tokens=48,
                                           response_format={"type": "json_schema",
                                                            "json_schema": {"name": "room", "schema": schema}})
    assert json.loads(reply.choices[0].message.content)["room"] in ("hall", "porch", "attic")
    with pytest.raises(openai.BadRequestError, match="dependentSchemas"):
        client.chat.completions.create(model="chatty", messages=TURNS, max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"dependentSchemas": {"a": {}}}}})
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="chatty", messages=TURNS, max_tokens=4, response_format={"type": "yaml"})


def test_completions_plain_and_streamed_agree_with_stop_and_seed(service, client):
    ask = dict(model="tiny-lm", prompt="The quick brown", max_tokens=16, temperature=0.7, seed=3)
    plain = client.completions.create(**ask)
    streamed = "".join(c.choices[0].text for c in client.completions.create(**ask, stream=True))
    assert plain.choices[0].text == streamed == service.rt.generate(
        "tiny-lm", prompt="The quick brown", max_new_tokens=16, temperature=0.7, seed=3).text
    stopped = client.completions.create(**ask, stop=[plain.choices[0].text[2:4]])
    assert stopped.choices[0].finish_reason == "stop" and len(stopped.choices[0].text) < len(plain.choices[0].text)


def test_our_own_parameters_ride_as_extra_body_fields(client):
    a = client.chat.completions.create(model="chatty", messages=TURNS, max_tokens=8, temperature=1.0,
                                       seed=1, extra_body={"top_k": 1})
    b = client.chat.completions.create(model="chatty", messages=TURNS, max_tokens=8, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content  # top_k 1 is greedy


def test_models_lists_what_is_loaded(client):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"chatty", "tiny-lm", "tiny-dcgan", "tiny-synth", "slow-lm"}
    assert models["tiny-dcgan"].owned_by == "edge-aigc" and models["tiny-dcgan"].task == "image-generation"


def test_an_idempotency_key_gets_the_first_answer_again_not_a_second_run(service, client):
    ask = dict(model="tiny-lm", prompt="Once", max_tokens=8, temperature=1.0)  # sampled: runs differ
    key = {"Idempotency-Key": "order-42"}
    first = client.completions.with_raw_response.create(**ask, extra_headers=key)
    done = service.worker.stats.done
    again = client.completions.with_raw_response.create(**ask, extra_headers=key)
    assert again.content == first.content and service.worker.stats.done == done  # replayed, not run
    other = client.completions.create(**ask, extra_headers={"Idempotency-Key": "order-43"})
    assert service.worker.stats.done == done + 1 and other.id != first.parse().id
    with pytest.raises(openai.BadRequestError, match="Idempotency-Key"):
        client.completions.create(**ask, extra_headers={"Idempotency-Key": "bad key!"})


# -- images and speech ---------------------------------------------------------------------
def test_images_come_back_as_base64_pngs_of_the_asked_size(client):
    out = client.images.generate(model="tiny-dcgan", prompt="b", n=2, response_format="b64_json",
                                 extra_body={"seed": 4})
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in out.data]
    assert [im.size for im in images] == [(28, 28), (28, 28)]
    big = client.images.generate(model="tiny-dcgan", prompt="", size="56x56")
    assert Image.open(io.BytesIO(base64.b64decode(big.data[0].b64_json))).size == (56, 56)
    with pytest.raises(openai.BadRequestError, match="30x30 is not available"):
        client.images.generate(model="tiny-dcgan", prompt="", size="30x30")
    with pytest.raises(openai.BadRequestError, match="not a class"):
        client.images.generate(model="tiny-dcgan", prompt="zebra")


def test_speech_is_a_wav_of_the_model(client):
    audio = client.audio.speech.create(model="tiny-synth", voice="default", input="A4:0.25 C5:0.25",
                                       response_format="wav")
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 4000 and w.getsampwidth() == 2
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.speech.create(model="tiny-synth", voice="default", input="A4:0.25", response_format="mp3")
    with pytest.raises(openai.BadRequestError, match="not an audio one"):
        client.audio.speech.create(model="chatty", voice="default", input="hello")


# -- bad input and auth: OpenAI's error shape, the right status, never a 500 ------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda c: c.chat.completions.create(model="nope", messages=TURNS), openai.NotFoundError, "not loaded"),
    (lambda c: c.chat.completions.create(model="tiny-dcgan", messages=TURNS), openai.BadRequestError,
     "image-generation model"),
    (lambda c: c.chat.completions.create(model="chatty", messages=TURNS, temperature=9), openai.BadRequestError,
     "out of range"),
    (lambda c: c.chat.completions.create(model="chatty", messages=TURNS, n=2), openai.BadRequestError, "'n'"),
    (lambda c: c.chat.completions.create(model="chatty", messages=[{"role": "tool", "content": "x"}]),
     openai.BadRequestError, "role 'tool'"),
    (lambda c: c.chat.completions.create(model="chatty", messages=[]), openai.BadRequestError, "non-empty"),
    (lambda c: c.chat.completions.create(model="chatty", messages=TURNS, extra_body={"wat": 1}),
     openai.BadRequestError, "unknown field 'wat'"),
    (lambda c: c.completions.create(model="tiny-lm", prompt=[1, 2, 3]), openai.BadRequestError, "token-id"),
    (lambda c: c.chat.completions.create(model="tiny-lm", messages=TURNS), openai.BadRequestError,
     "chat template"),
    (lambda c: c.images.generate(model="chatty", prompt="", size="56x56"), openai.BadRequestError,
     "text-generation model"),
    (lambda c: c.images.generate(model="tiny-dcgan", prompt="", size="56x56", extra_body={"scale": 2}),
     openai.BadRequestError, "not both"),
], ids=["unknown-model", "wrong-task", "out-of-range", "n", "role", "empty", "unknown-field", "token-ids",
        "no-template", "size-of-a-text-model", "size-and-scale"])
def test_bad_requests_get_openai_errors(client, make, error, match):
    with pytest.raises(error, match=match) as info:
        make(client)
    assert set(info.value.body) >= {"message", "type", "code"}


def test_a_wrong_or_missing_token_is_refused(base, client):
    with openai.OpenAI(base_url=f"{base}/v1", api_key="wrong-token-0123456789", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    done = curl("-i", f"{base}/v1/models")
    assert " 401 " in done.stdout.splitlines()[0] and "www-authenticate: bearer" in done.stdout.lower()
    assert json.loads(done.stdout.split("\n\n", 1)[1])["error"]["type"] == "authentication_error"
    assert json.loads(curl(f"{base}/healthz").stdout)["status"] == "ok"  # health needs no token


@pytest.mark.parametrize("body, status, code", [
    ("{not json", 400, "bad_request"), ('{"model": "chatty", "messages": NaN}', 400, "bad_request"),
    ('"a string"', 400, "bad_request"), ('{"model": "chatty", "messages": [{"role": "user", "content": "'
                                         + "x" * 9000 + '"}]}', 413, "too_large"),
], ids=["malformed", "nan", "not-an-object", "too-large"])
def test_curl_bad_bodies(base, body, status, code):
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {TOKEN}",
         "-H", "Content-Type: application/json", "--data-binary", "@-", f"{base}/v1/chat/completions"],
        input=body, capture_output=True, text=True, timeout=70)
    text, got = done.stdout.rsplit("\n", 1)
    assert int(got) == status and json.loads(text)["error"]["code"] == code


def test_curl_streams_server_sent_events(base):
    done = curl("-N", "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json", "-d",
                json.dumps({"model": "tiny-lm", "prompt": "Once", "max_tokens": 8, "temperature": 0, "stream": True}),
                f"{base}/v1/completions")
    events = [line[len("data: "):] for line in done.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) >= 3
    assert all(json.loads(e)["object"] == "text_completion" for e in events[:-1])


def test_unknown_routes_and_methods_are_openai_errors(base):
    done = curl("-w", "\n%{http_code}", "-H", f"Authorization: Bearer {TOKEN}", f"{base}/v1/embeddings")
    text, got = done.stdout.rsplit("\n", 1)
    assert got == "404" and json.loads(text)["error"]["code"] == "not_found"
    done = curl("-w", "\n%{http_code}", "-X", "DELETE", "-H", f"Authorization: Bearer {TOKEN}", f"{base}/v1/models")
    assert done.stdout.rsplit("\n", 1)[1] == "405"


def test_metrics_are_prometheus_text(base, client):
    client.completions.create(model="tiny-lm", prompt="Once", max_tokens=2)
    done = curl("-H", f"Authorization: Bearer {TOKEN}", f"{base}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(done.stdout)}
    assert families["edge_aigc_requests"].type == "counter"
    done_count = [s.value for s in families["edge_aigc_requests"].samples if s.labels.get("outcome") == "done"]
    assert done_count and done_count[0] >= 1
    assert {s.labels["model"] for s in families["edge_aigc_model_loaded"].samples} >= {"chatty", "tiny-lm"}
    assert families["edge_aigc_resident_memory_bytes"].samples[0].value > 1 << 20


# -- cancellation, load, and one queue for both front ends --------------------------------
def test_a_client_that_disconnects_mid_stream_cancels_its_generation(service, base):
    failed = service.worker.stats.failed
    body = {"model": "slow-lm", "prompt": "Once", "max_tokens": 2000, "temperature": 0, "stream": True,
            "speculation": "off"}  # plain decoding: seconds of tokens
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{base}/v1/completions", json=body,
                         headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(6)]  # a few tokens arrived
            assert service.worker.busy
    wait_idle(service)  # bounded: fails if the 2,000-token request went on
    assert service.worker.stats.failed == failed + 1


def test_a_client_that_gives_up_while_queued_cancels_its_request(service, broker):
    wait_idle(service)
    failed = service.worker.stats.failed
    mqtt = Listener(broker, ["edge-aigc/web/res/#"])
    try:
        mqtt.publish("edge-aigc/web/cmd", json.dumps({"id": "hog", "action": "generate", "model": "slow-lm", "params": {
            "prompt": "Once", "max_new_tokens": 2048, "temperature": 0, "speculation": "off"}}).encode())
        mqtt.next(topic="edge-aigc/web/res/hog", event="token", timeout=30)
        # gives up after 0.5 s; the hog (~2.5 s of tokens, cancelled below) keeps it queued until then
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.5) as http:
            http.post(f"{base_url(service)}/v1/completions", headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"model": "tiny-lm", "prompt": "Once", "max_tokens": 4})
        deadline = time.monotonic() + 10
        while not service.worker._cancelled and time.monotonic() < deadline:  # the queued request is marked
            time.sleep(0.02)
        mqtt.publish("edge-aigc/web/cmd", json.dumps({"id": "unhog", "action": "cancel", "target": "hog"}).encode())
        wait_idle(service)
    finally:
        mqtt.close()
    assert service.worker.stats.failed == failed + 2  # the hog, cancelled; the HTTP request, never run


def test_load_gets_429s_not_an_unbounded_queue_and_every_request_one_answer(service, base):
    wait_idle(service)
    body = {"model": "slow-lm", "prompt": "Once", "max_tokens": 40, "temperature": 0}
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(timeout=120) as http:
            r = http.post(f"{base}/v1/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r.status_code for r in answers)
    assert len(answers) == 10 and set(codes) == {200, 429}
    ok = [r.json() for r in answers if r.status_code == 200]
    assert len({o["id"] for o in ok}) == len(ok) and all(o["usage"]["completion_tokens"] == 40 for o in ok)
    busy = [r for r in answers if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "busy" for r in busy)
    assert len(ok) <= 10 - len(busy) and len(ok) >= 3  # one running + a queue of 2 at least


def test_mqtt_and_http_share_one_queue(service, broker, client):
    wait_idle(service)
    # 2,048 tokens in 4 beams, several seconds (cancelled below): the one running must outlast the
    # checks, also on a loaded CI machine (1,500 greedy tokens, ~1.9 s, once finished first)
    slow = {"prompt": "Once", "max_new_tokens": 2048, "temperature": 0, "num_beams": 4}
    mqtt = Listener(broker, ["edge-aigc/web/res/#"])
    try:
        for i in range(3):  # one runs, two wait: the queue (2) is full
            mqtt.publish("edge-aigc/web/cmd", json.dumps({"id": f"share-{i}", "action": "generate",
                                                          "model": "slow-lm", "params": slow}).encode())
        deadline = time.monotonic() + 30
        while service.worker.queue_depth < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="tiny-lm", prompt="Once", max_tokens=2)
        for i in range(3):
            mqtt.publish("edge-aigc/web/cmd", json.dumps({"id": f"stop-{i}", "action": "cancel",
                                                          "target": f"share-{i}"}).encode())
        wait_idle(service)
        # and the other way round: HTTP requests fill the queue, an MQTT one is refused as busy
        body = {"model": "slow-lm", "prompt": "Once", "max_tokens": 2048, "temperature": 0, "num_beams": 4}
        codes: list[int] = []

        def post() -> None:
            with httpx.Client(timeout=120) as http:
                codes.append(http.post(f"{base_url(service)}/v1/completions", json=body,
                                       headers={"Authorization": f"Bearer {TOKEN}"}).status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while service.worker.queue_depth < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert service.worker.queue_depth == 2, f"the HTTP requests did not fill the queue: {codes}"
        mqtt.publish("edge-aigc/web/cmd", json.dumps({"id": "refused", "action": "generate", "model": "tiny-lm",
                                                      "params": {"prompt": "x"}}).encode())
        refusal = mqtt.next(timeout=30, topic="edge-aigc/web/res/refused", event="error")
        assert json.loads(refusal.payload)["code"] == "busy"
        for job_id in [service.worker.running_id, *service.worker.queued_ids()]:  # the HTTP requests
            service.worker.cancel(job_id)
        for t in threads:
            t.join(60)
        assert sorted(codes) == [503, 503, 503]  # cancelled on the device: each got its one answer
    finally:
        mqtt.close()
    wait_idle(service)


# -- configuration --------------------------------------------------------------------------
def test_http_on_another_address_without_tokens_is_refused(tmp_path, bundles):
    cfg = write_config(tmp_path / "device.toml", 1, [bundles["image"]],
                       http={"enabled": True, "listen": "0.0.0.0:0"})
    with pytest.raises(ConfigError, match="bearer tokens"):
        build_service(load_config(cfg))


@pytest.mark.parametrize("http, match", [
    ({"enabled": True, "listen": "8080"}, "listen"), ({"enabled": True, "cert_file": "/x"}, "go together"),
    ({"enabled": True, "port": 80}, "port"), ({"enabled": True, "cors_origins": "*"}, "cors_origins"),
])
def test_bad_http_config_names_the_key(tmp_path, http, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write_config(tmp_path / "device.toml", 1, ["digits"], http=http))


def test_short_tokens_are_refused(tmp_path, bundles):
    (tmp_path / "tokens").write_text("short\n")
    cfg = write_config(tmp_path / "device.toml", 1, [bundles["image"]],
                       http={"enabled": True, "listen": "127.0.0.1:0", "tokens_file": str(tmp_path / "tokens")})
    with pytest.raises(ConfigError, match="shorter than 16"):
        build_service(load_config(cfg))


def test_https_with_cors_serves_a_client_that_trusts_the_certificate(broker, bundles, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundles["image"]], device_id="tls",
                       http={"enabled": True, "listen": "127.0.0.1:0", "cert_file": str(pki["server_crt"]),
                             "key_file": str(pki["server_key"]), "cors_origins": ["https://app.example"]})
    with running_service(cfg) as svc:
        url = f"https://127.0.0.1:{svc.http.port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"]))) as http, \
                openai.OpenAI(base_url=f"{url}/v1", api_key="unused", http_client=http, max_retries=0) as c:
            assert [m.id for m in c.models.list()] == ["tiny-dcgan"]
            pre = http.options(f"{url}/v1/models", headers={"Origin": "https://app.example",
                                                            "Access-Control-Request-Method": "GET"})
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            other = http.get(f"{url}/v1/models", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
        assert curl(f"{url}/healthz").returncode != 0  # curl without the CA refuses the server


def test_edge_aigc_serve_with_the_http_flag_answers_the_openai_client(broker, bundles, chat_lm, tmp_path):
    """The real command, as a device runs it: chat, streaming chat, images and speech."""
    cfg = write_config(tmp_path / "device.toml", broker.port, [chat_lm[1], bundles["image"], bundles["audio"]],
                       device_id="quick")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = serve_process(cfg, extra=["--http", f"127.0.0.1:{port}"])
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            done = curl("--max-time", "2", f"http://127.0.0.1:{port}/healthz")
            if done.returncode == 0:
                health = json.loads(done.stdout)
                break
            time.sleep(0.2)
        assert health == {"status": "ok", "models": ["chatty", "tiny-dcgan", "tiny-synth"], "queue_depth": 0}
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0) as c:
            ask = dict(model="chatty", messages=TURNS, temperature=0, max_tokens=8)
            text = c.chat.completions.create(**ask).choices[0].message.content
            assert text and "".join(ch.choices[0].delta.content or "" for ch in
                                    c.chat.completions.create(**ask, stream=True) if ch.choices) == text
            assert len(c.images.generate(model="tiny-dcgan", prompt="a", n=3).data) == 3
            assert c.audio.speech.create(model="tiny-synth", voice="default", input="A4:0.25").content[:4] == b"RIFF"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    refused = subprocess.run([sys.executable, "-m", "edge_aigc", "serve", "--config", str(cfg), "--http",
                              "0.0.0.0:0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 6 and "bearer tokens" in refused.stderr


def test_the_listening_socket_says_it_is_tcp_so_asyncio_turns_nagle_off(service):
    # asyncio sets TCP_NODELAY on accepted sockets only when proto is IPPROTO_TCP; with proto 0
    # a keep-alive client waited ~40 ms per response for its delayed ACK (benchmarks/http.py)
    assert service.http._sock.proto == socket.IPPROTO_TCP
