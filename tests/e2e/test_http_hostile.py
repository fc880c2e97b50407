"""Hostile input over HTTP: every client mistake is a 4xx in OpenAI's error shape (down to a
request too malformed to reach the app), never a 500, a traceback or a redirect built from the
request; the service goes on. The MQTT side of the same rule: test_hostile_input.py."""
from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from tests.helpers.service import running_service, write_config

TOKEN = "hostile-token-0123456789abcdef"
AUTH = f"Bearer {TOKEN}".encode()
CHAT = b"POST /v1/chat/completions"


@pytest.fixture(scope="module")
def service(broker, bundles, chat_lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("http-hostile")
    (d / "tokens").write_text(TOKEN + "\n")
    cfg = write_config(d / "device.toml", broker.port, [chat_lm[1], bundles["image"]], device_id="hostile",
                       http={"enabled": True, "listen": "127.0.0.1:0", "tokens_file": str(d / "tokens")})
    with running_service(cfg) as svc:
        yield svc


def raw(port: int, head: bytes, body: bytes = b"", headers: list[bytes] = (),
        auth: bytes | None = AUTH) -> tuple[int, dict, bytes]:
    """One request written byte for byte (no client library tidies it), its first 20 KiB
    before the rest as a slow client's would arrive: status, headers, body."""
    lines = [head + b" HTTP/1.1", b"Host: 127.0.0.1", *([b"Authorization: " + auth] if auth else []),
             *headers, b"Content-Length: %d" % len(body), b"Connection: close"]
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request[:20480])
        if len(request) > 20480:
            time.sleep(0.2)
            try:
                s.sendall(request[20480:])
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused after the first part: its answer is already there to read
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    fields = dict(h.lower().split(": ", 1) for h in header_lines)
    return int(status_line.split()[1]), fields, payload


def chat(messages: list) -> bytes:
    return json.dumps({"model": "chatty", "messages": messages, "max_tokens": 2}).encode()


def images(**fields) -> bytes:
    return json.dumps({"model": "tiny-dcgan", **fields}).encode()


# (name, request line, body, extra headers, authorization, expected status)
HOSTILE = [
    ("a token followed by bytes that are not ASCII", CHAT, chat([{"role": "user", "content": "hi"}]), [],
     AUTH + b"\xff\xfe", 401),
    ("only bytes that are not ASCII as the token", CHAT, b"{}", [], b"Bearer \xff\xfe", 401),
    ("a token that is UTF-8 text", b"GET /v1/models", b"", [], "Bearer jeton-é".encode(), 401),
    ("a role that is a list", CHAT, chat([{"role": ["user"], "content": "hi"}]), [], AUTH, 400),
    ("a role that is an object", CHAT, chat([{"role": {"a": 1}, "content": "hi"}]), [], AUTH, 400),
    ("a role that is null", CHAT, chat([{"role": None, "content": "hi"}]), [], AUTH, 400),
    ("content that is a number", CHAT, chat([{"role": "user", "content": 7}]), [], AUTH, 400),
    ("a size of superscript digits", b"POST /v1/images/generations", images(size="²x²"), [], AUTH, 400),
    ("a size of Arabic-Indic digits", b"POST /v1/images/generations", images(size="٣x٣"), [], AUTH, 400),
    ("a size of 5000 digits", b"POST /v1/images/generations", images(size="9" * 5000 + "x1"), [], AUTH, 400),
    ("a superscript digit as the class", b"POST /v1/images/generations", images(prompt="²"), [], AUTH, 400),
    ("a class of 5000 digits", b"POST /v1/images/generations", images(prompt="9" * 5000), [], AUTH, 400),
    ("a method the route does not take", b"PUT /v1/models", b"", [], AUTH, 405),
    ("a body that is not UTF-8", CHAT, b'{"model": "chatty", "messages": "\xff"}', [], AUTH, 400),
    ("a body that is JSON NaN", CHAT, b'{"model": "chatty", "messages": [], "temperature": NaN}', [], AUTH, 400),
    ("a body nested 20000 deep", CHAT, b"[" * 20000 + b"]" * 20000, [], AUTH, 400),
    ("a lone surrogate in the content", CHAT, b'{"model": "chatty", "messages": [{"role": "user", "content": "\\ud800"}]}',
     [], AUTH, 400),
    ("max_tokens as a string", CHAT, json.dumps({"model": "chatty", "messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": "many"}).encode(), [], AUTH, 400),
    ("an unknown model", CHAT, json.dumps({"model": "../../etc/passwd", "messages": [{"role": "user", "content": "x"}]}).encode(),
     [], AUTH, 404),
    ("an Idempotency-Key with a space", CHAT, chat([{"role": "user", "content": "hi"}]), [b"Idempotency-Key: a b"], AUTH, 400),
]


@pytest.mark.parametrize("name,head,body,headers,auth,status", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_http_is_a_client_error_in_the_apis_shape(service, caplog, name, head, body, headers, auth, status):
    with caplog.at_level(logging.WARNING):
        got, fields, payload = raw(service.http.port, head, body, headers, auth)
    assert got == status, payload
    assert "location" not in fields and fields["content-type"] == "application/json"
    err = json.loads(payload)["error"]
    assert err["type"] != "server_error" and err["code"] != "internal" and err["message"]
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not failures, "a client's mistake was logged as a failure"
    assert raw(service.http.port, b"GET /healthz", auth=None)[0] == 200


@pytest.mark.parametrize("header", [b"X-Note: a\x00b", b"X-Big: " + b"a" * 40000, b"X-Bad\x01Name: 1", b"no colon"],
                         ids=["a NUL in a header", "a header over 16 KiB", "a control byte in a name", "a line without a colon"])
def test_a_request_too_malformed_to_reach_the_app_is_answered_in_the_apis_shape(service, header):
    got, fields, payload = raw(service.http.port, b"GET /v1/models", headers=[header])
    assert got == 400 and fields["content-type"] == "application/json"
    assert json.loads(payload)["error"] == {"message": json.loads(payload)["error"]["message"], "type": "invalid_request_error",
                                            "param": None, "code": "bad_request"}
    assert raw(service.http.port, b"GET /healthz", auth=None)[0] == 200


def test_a_foreign_host_never_comes_back_as_a_redirect(service):
    got, fields, _ = raw(service.http.port, b"GET /v1/models/", headers=[])
    with socket.create_connection(("127.0.0.1", service.http.port), timeout=30) as s:
        s.sendall(b"GET /v1/models/ HTTP/1.1\r\nHost: evil.example\r\nAuthorization: " + AUTH + b"\r\nConnection: close\r\n\r\n")
        answer = s.recv(65536)
    assert got == 404 and "location" not in fields
    assert answer.startswith(b"HTTP/1.1 404") and b"evil.example" not in answer
