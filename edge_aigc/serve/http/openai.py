"""OpenAI's request and response shapes, translated to and from our tasks' parameters.

Pure functions, no HTTP: ``http.py`` parses a body, calls ``*_call`` to get the model and
the task parameters (a ``BadRequest`` naming the field when the body is wrong), runs them
through the service's queue, and shapes the answer with the ``*_response``/``*_chunk``
helpers. Field by field reference: docs/http.md.

OpenAI fields we cannot honour are accepted only at their default value (``n`` = 1,
``frequency_penalty`` = 0, …): a request that asks for more gets a 400 naming the field,
never a silently different answer. Our own parameters (``top_k``, ``session``, an image
model's ``label`` …) ride as extra body fields, which the ``openai`` client sends with
``extra_body``.
"""
from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ...contract import Task
from ...errors import BadRequest
from ...tasks.base import Result

__all__ = ["Call", "chat_call", "completion_call", "image_call", "speech_call", "chat_response",
           "chat_chunk", "completion_response", "completion_chunk", "usage", "image_response",
           "model_list", "error_body", "finish_reason"]

# Fields OpenAI defines that we take only at these values (anything else is a 400).
_ONLY_DEFAULT: dict[str, tuple[Any, ...]] = {
    "n": (1, None), "frequency_penalty": (0, 0.0, None), "presence_penalty": (0, 0.0, None),
    "logprobs": (False, None), "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []),
    "tool_choice": (None, "none"), "parallel_tool_calls": (None, False, True), "store": (None, False),
    "metadata": (None, {}), "service_tier": (None, "auto", "default"), "echo": (False, None),
    "best_of": (1, None), "suffix": (None, ""), "response_format": (None, {"type": "text"}),
}  # response_format: chat and completions take JSON ones (response_schema below), images b64_json
_IGNORED = {"user"}  # an end-user id for abuse tracking: nothing to do with it on a device
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}
_TEXT_EXTRAS = ("top_k", "repetition_penalty", "num_beams", "session", "speculation")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Call:
    """One request, in our terms: which model, which task it must be, which parameters."""

    model: str
    task: Task
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    size: tuple[int, int] | None = None   # images: the asked width x height


def _check_fields(body: Any, known: set[str], endpoint: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{endpoint}: the body must be a JSON object")
    unknown = sorted(set(body) - known - set(_ONLY_DEFAULT) - _IGNORED)
    if unknown:
        raise BadRequest(f"{endpoint}: unknown field {unknown[0]!r}")
    for name, allowed in _ONLY_DEFAULT.items():  # those an endpoint knows, it checks itself
        if name in body and name not in known and body[name] not in allowed:
            raise BadRequest(f"{endpoint}: {name!r} = {body[name]!r} is not supported on this device "
                             f"(only {allowed[0]!r})")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(f"{endpoint}: 'model' is required (GET /v1/models lists them)")
    return body


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise BadRequest("'stream_options' is only allowed with 'stream': true")
    if not isinstance(options, dict) or set(options) - {"include_usage"} or \
            not isinstance(options.get("include_usage", False), bool):
        raise BadRequest("'stream_options' takes only 'include_usage' (true or false)")
    return stream, options.get("include_usage", False)


def _text_params(body: dict[str, Any]) -> dict[str, Any]:
    params = {ours: body[theirs] for theirs, ours in _SAMPLING.items() if body.get(theirs) is not None}
    for limit in ("max_completion_tokens", "max_tokens"):
        if body.get(limit) is not None:
            params["max_new_tokens"] = body[limit]
            break
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else stop
    params.update({k: body[k] for k in _TEXT_EXTRAS if body.get(k) is not None})
    schema = response_schema(body.get("response_format"))
    if schema is not None:
        params["json_schema"] = schema
    return params


def response_schema(value: Any) -> dict[str, Any] | None:
    """``response_format`` as the JSON schema the output is held to (None: plain text)."""
    if value is None or value == {"type": "text"}:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise BadRequest("'response_format': json_schema needs {\"name\", \"schema\": {…}}")
        return spec.get("schema", {})
    raise BadRequest("'response_format' must be {\"type\": \"text\"}, \"json_object\" or \"json_schema\"")


def _message(i: int, m: Any) -> dict[str, str]:
    if not isinstance(m, dict) or "role" not in m or "content" not in m or set(m) - {"role", "content", "name"}:
        raise BadRequest(f"messages[{i}] must be an object with 'role' and 'content' (and optionally 'name')")
    if not isinstance(m["role"], str) or m["role"] not in ROLES:
        raise BadRequest(f"messages[{i}]: role {m['role']!r} is not supported (known: {', '.join(ROLES)})")
    content = m["content"]
    if isinstance(content, list):  # content parts: text only
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise BadRequest(f"messages[{i}]: only text content parts are supported")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise BadRequest(f"messages[{i}]: 'content' must be a string or a list of text parts")
    return {"role": ROLES[m["role"]], "content": content}


def chat_call(body: Any) -> Call:
    body = _check_fields(body, {"model", "messages", "max_tokens", "max_completion_tokens", "stream",
                                "stream_options", "stop", "response_format", *_SAMPLING, *_TEXT_EXTRAS},
                         "chat completions")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("chat completions: 'messages' must be a non-empty list")
    stream, usage_too = _stream_flags(body)
    params = {"messages": [_message(i, m) for i, m in enumerate(messages)], **_text_params(body)}
    return Call(body["model"], Task.TEXT, params, stream, usage_too)


def completion_call(body: Any) -> Call:
    body = _check_fields(body, {"model", "prompt", "max_tokens", "stream", "stream_options", "stop",
                                "response_format", *_SAMPLING, *_TEXT_EXTRAS}, "completions")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("completions: 'prompt' must be a string (token-id and batched prompts are not supported)")
    stream, usage_too = _stream_flags(body)
    return Call(body["model"], Task.TEXT, {"prompt": prompt, **_text_params(body)}, stream, usage_too)


_IMAGE_EXTRAS = ("seed", "scale", "label")


def image_call(body: Any) -> Call:
    """``prompt`` is the class label of a class-conditional model ("7", or a label's name);
    empty draws the classes in turn. ``n`` images, one PNG each, as ``b64_json``."""
    body = _check_fields(body, {"model", "prompt", "n", "size", "quality", "style", "response_format",
                                *_IMAGE_EXTRAS}, "images")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
        raise BadRequest("images: 'n' must be an integer from 1 to 64")
    fmt = body.get("response_format")
    if fmt not in (None, "b64_json"):
        raise BadRequest("images: 'response_format' must be 'b64_json' (a device serves no image URLs)")
    for name, default in (("quality", ("auto", "standard")), ("style", ("natural", "vivid"))):
        if body.get(name) not in (None, *default):
            raise BadRequest(f"images: {name!r} = {body[name]!r} is not supported")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest("images: 'prompt' must be a string (a class label for conditional models)")
    if prompt.strip() and body.get("label") is not None:
        raise BadRequest("images: give the class in 'prompt' or in 'label', not both")
    params: dict[str, Any] = {"count": n, "grid": False, **{k: body[k] for k in _IMAGE_EXTRAS if body.get(k) is not None}}
    if prompt.strip():
        params["label"] = prompt.strip()
    return Call(body["model"], Task.IMAGE, params, size=_size(body.get("size")))


def _size(value: Any) -> tuple[int, int] | None:
    if value in (None, "auto"):
        return None
    match = re.fullmatch(r"([0-9]{1,5})x([0-9]{1,5})", value) if isinstance(value, str) else None
    if match is None:  # ASCII digits: str.isdigit() takes '²', which int() refuses
        raise BadRequest(f"images: 'size' must look like 112x112 or be 'auto', got {value!r}")
    return int(match[1]), int(match[2])


# The task parameter a speech request's ``input`` fills, per audio-producing task.
SPEECH_INPUT = {Task.AUDIO: "notes", Task.SPEECH: "text"}


def speech_call(body: Any, task: Task, speakers: int = 1) -> Call:
    """``input`` is the model's text input: the text a voice speaks (``speech-synthesis``), or a
    note string for an ``audio`` model such as ``tones`` ("C4:0.5 E4:0.5"). For a voice,
    ``speed`` becomes its ``length_scale`` (1 / speed) and ``voice`` names the speaker of a
    multi-speaker voice; a one-speaker model accepts any ``voice`` and ignores it."""
    body = _check_fields(body, {"model", "input", "voice", "response_format", "speed", "instructions",
                                "stream_format", "gain", "seed"}, "audio speech")
    if task not in SPEECH_INPUT:
        raise BadRequest(f"audio speech: model {body['model']!r} is a {task} model, not an audio one")
    if body.get("response_format") not in (None, "wav"):
        raise BadRequest("audio speech: 'response_format' must be 'wav' (16-bit PCM)")
    speed = body.get("speed")
    if task == Task.AUDIO and speed not in (None, 1, 1.0):
        raise BadRequest("audio speech: 'speed' other than 1.0 is not supported by this model")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0):
        raise BadRequest("audio speech: 'speed' must be a number in [0.25, 4.0]")
    if body.get("instructions") or body.get("stream_format") not in (None, "audio"):
        raise BadRequest("audio speech: 'instructions' and 'stream_format' are not supported")
    if not isinstance(body.get("input"), str) or not body["input"].strip():
        raise BadRequest("audio speech: 'input' must be non-empty text")
    if body.get("voice") is not None and not isinstance(body["voice"], str):
        raise BadRequest("audio speech: 'voice' must be a string")
    params: dict[str, Any] = {SPEECH_INPUT[task]: body["input"]}
    extras = {"gain"} if task == Task.AUDIO else {"seed"}
    for key in ("gain", "seed"):
        if body.get(key) is not None:
            if key not in extras:
                raise BadRequest(f"audio speech: '{key}' does not apply to a {task} model")
            params[key] = body[key]
    if task == Task.SPEECH and speed is not None:
        params["length_scale"] = 1.0 / float(speed)
    if task == Task.SPEECH and speakers > 1 and body.get("voice") is not None:
        params["speaker"] = body["voice"]
    return Call(body["model"], task, params)


# -- answers -------------------------------------------------------------------------------
def finish_reason(result: Result) -> str:
    return "length" if result.meta.get("finish_reason") == "length" else "stop"


def usage(result: Result) -> dict[str, Any]:
    """Token counts; ``prompt_tokens_details.cached_tokens`` are those whose KV cache was reused
    (a session's or the client's previous prompt), as OpenAI reports its prompt caching."""
    prompt, done = int(result.meta.get("prompt_tokens", 0)), int(result.meta.get("generated_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": int(result.meta.get("cached_tokens", 0))}}


def _head(kind: str, rid: str, model: str, created: int) -> dict[str, Any]:
    return {"id": rid, "object": kind, "created": created, "model": model}


def chat_response(rid: str, result: Result, created: int) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": result.text or ""},
              "logprobs": None, "finish_reason": finish_reason(result)}
    return {**_head("chat.completion", rid, result.model, created), "choices": [choice], "usage": usage(result)}


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, str] | None = None,
               finish: str | None = None, usage_: dict[str, int] | None = None) -> dict[str, Any]:
    """A streamed piece: a delta, the last one (``finish``), or the usage-only chunk (no choices)."""
    choices = [] if usage_ is not None else [{"index": 0, "delta": delta or {}, "logprobs": None,
                                              "finish_reason": finish}]
    return {**_head("chat.completion.chunk", rid, model, created), "choices": choices,
            **({"usage": usage_} if usage_ is not None else {})}


def completion_response(rid: str, result: Result, created: int) -> dict[str, Any]:
    choice = {"index": 0, "text": result.text or "", "logprobs": None, "finish_reason": finish_reason(result)}
    return {**_head("text_completion", rid, result.model, created), "choices": [choice], "usage": usage(result)}


def completion_chunk(rid: str, model: str, created: int, text: str = "", finish: str | None = None,
                     usage_: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if usage_ is not None else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    return {**_head("text_completion", rid, model, created), "choices": choices,
            **({"usage": usage_} if usage_ is not None else {})}


def image_response(result: Result, created: int) -> dict[str, Any]:
    return {"created": created, "data": [{"b64_json": base64.b64encode(o.data).decode("ascii")}
                                         for o in result.outputs]}


def model_list(infos: list[dict[str, Any]], created: int | None = None) -> dict[str, Any]:
    """``GET /v1/models``: OpenAI's fields, plus our task, recipe and format for each."""
    created = int(time.time()) if created is None else created
    return {"object": "list", "data": [
        {"id": i["name"], "object": "model", "created": created, "owned_by": "edge-aigc",
         "task": i["task"], "version": i["version"], "format": i["format"], "recipe": i["recipe"]}
        for i in infos]}


# OpenAI's error types by HTTP status.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
