"""Ollama's request and response shapes, translated to and from our text task's parameters.

Pure functions, no HTTP, as openai.py is for OpenAI's: ``ollama_routes.py`` parses a body,
calls ``chat_call``/``generate_call`` (a ``BadRequest`` naming the field when the body is
wrong), runs the call through the service's queue, and shapes each event with the helpers
here. What Home Assistant's Ollama integration sends is what this covers (docs/homeassistant.md);
a field we cannot honour is a 400 naming it, never a silently different answer.

Differences from Ollama, each said where it applies: ``num_predict`` unset means "until the
end of the answer", capped by the text task's ``max_new_tokens`` limit (2048); ``num_ctx`` is
checked and accepted, the model's own window applies; ``keep_alive`` is accepted, the models
the device config names stay loaded; ``format`` holds the output to JSON (constrain.py);
``tools`` wait for tool rendering and parsing.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ...contract import Task
from ...errors import BadRequest
from ...tasks.base import Result
from .openai import Call

__all__ = ["chat_call", "generate_call", "chunk", "final", "model_entry", "created_at", "MAX_PREDICT",
           "check_keep_alive", "model_name"]

MAX_PREDICT = 2048   # the text task's max_new_tokens limit: what "until the end" means here
_SAMPLING = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "seed": "seed",
             "repeat_penalty": "repetition_penalty"}
# Ollama's options that change how a server runs, not what it answers: accepted, not used.
_RUNTIME_OPTIONS = {"num_keep", "num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "low_vram",
                    "num_thread", "numa", "vocab_only", "f16_kv", "logits_all", "embedding_only"}
# Sampling options we do not have: accepted only at the value that means "off".
_ONLY_OFF = {"min_p": (0, 0.0), "typical_p": (1, 1.0), "mirostat": (0,), "presence_penalty": (0, 0.0),
             "frequency_penalty": (0, 0.0), "tfs_z": (1, 1.0), "penalize_newline": (True, False),
             "repeat_last_n": (64, -1)}
_ROLES = ("system", "user", "assistant")
_DURATION = re.compile(r"^-?[0-9]{1,9}(\.[0-9]+)?(ns|us|µs|ms|s|m|h)?$")


def model_name(name: Any) -> str:
    """A request's model: ours, or Ollama's spelling of it with the ``:latest`` tag."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' is required (GET /api/tags lists them)")
    return name[:-len(":latest")] if name.endswith(":latest") else name


def check_keep_alive(value: Any) -> None:
    """``keep_alive``: a number of seconds or a Go duration ("5m", "-1"); checked, then accepted."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise BadRequest(f"'keep_alive' must be seconds or a duration such as \"5m\", got {value!r}")


def _options(options: Any) -> dict[str, Any]:
    if options is None:
        return {"max_new_tokens": MAX_PREDICT}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object")
    params: dict[str, Any] = {ours: options[theirs] for theirs, ours in _SAMPLING.items() if options.get(theirs) is not None}
    predict = options.get("num_predict")
    if predict is not None and (isinstance(predict, bool) or not isinstance(predict, int) or predict == 0 or predict < -2):
        raise BadRequest(f"options.num_predict must be a positive integer, -1 or -2, got {predict!r}")
    params["max_new_tokens"] = MAX_PREDICT if predict in (None, -1, -2) else predict
    ctx = options.get("num_ctx")
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or not 1 <= ctx <= 1 << 20):
        raise BadRequest(f"options.num_ctx must be an integer from 1 to 1048576, got {ctx!r}")
    if options.get("stop") is not None:
        params["stop"] = options["stop"]
    for key, value in options.items():
        if key in _ONLY_OFF and value not in _ONLY_OFF[key]:
            raise BadRequest(f"options.{key} = {value!r} is not supported on this device")
        if key not in _ONLY_OFF and key not in _RUNTIME_OPTIONS and key not in _SAMPLING \
                and key not in ("num_predict", "num_ctx", "stop"):
            raise BadRequest(f"options: unknown option {key!r}")
    return params


def _common(body: Any, endpoint: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{endpoint}: the body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"{endpoint}: unknown field {unknown[0]!r}")
    if body.get("tools"):
        raise BadRequest(f"{endpoint}: 'tools' is not supported on this device yet (it arrives with "
                         "constrained decoding)")
    if body.get("think"):
        raise BadRequest(f"{endpoint}: 'think' is not supported: the device's models do not think aloud")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise BadRequest(f"{endpoint}: 'stream' must be true or false")
    check_keep_alive(body.get("keep_alive"))
    return body


def _format(value: Any) -> dict[str, Any]:
    """``format``: "json" (any JSON object) or a JSON schema, as the text task's ``json_schema``."""
    if value in (None, ""):
        return {}
    if value == "json":
        return {"json_schema": {"type": "object"}}
    if isinstance(value, dict):
        return {"json_schema": value}
    raise BadRequest(f"'format' must be \"json\" or a JSON schema object, got {value!r}")


def _message(i: int, m: Any) -> dict[str, str]:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise BadRequest(f"messages[{i}] must be an object with a 'role' and 'content'")
    if m.get("images"):
        raise BadRequest(f"messages[{i}]: images are not supported (the device's chat models read text)")
    if m.get("tool_calls") or m["role"] == "tool":
        raise BadRequest(f"messages[{i}]: tool calls and tool results are not supported on this device yet")
    if m["role"] not in _ROLES:
        raise BadRequest(f"messages[{i}]: role {m['role']!r} is not supported (known: {', '.join(_ROLES)})")
    extra = sorted(set(m) - {"role", "content", "images", "tool_calls", "thinking", "tool_name"})
    if extra:
        raise BadRequest(f"messages[{i}]: unknown field {extra[0]!r}")
    content = m.get("content", "")
    if not isinstance(content, str):
        raise BadRequest(f"messages[{i}]: 'content' must be a string")
    return {"role": m["role"], "content": content}


def chat_call(body: Any) -> Call:
    body = _common(body, "chat", {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think"})
    model, messages = model_name(body.get("model")), body.get("messages")
    options = {**_options(body.get("options")), **_format(body.get("format"))}
    if messages is None or messages == []:
        return Call(model, Task.TEXT, {}, body.get("stream", True))  # a load request: nothing to say
    if not isinstance(messages, list):
        raise BadRequest("chat: 'messages' must be a list")
    params = {"messages": [_message(i, m) for i, m in enumerate(messages)], **options}
    return Call(model, Task.TEXT, params, body.get("stream", True))


def generate_call(body: Any, chat_template: bool) -> Call:
    """``prompt`` (with ``system``) through the model's chat template, as Ollama applies its
    template; ``raw`` (or a model without a template) continues the prompt as it is."""
    body = _common(body, "generate", {"model", "prompt", "suffix", "images", "format", "options", "system",
                                      "template", "stream", "raw", "keep_alive", "context", "think"})
    model, options = model_name(body.get("model")), {**_options(body.get("options")), **_format(body.get("format"))}
    for name in ("suffix", "template", "context", "images"):
        if body.get(name):
            raise BadRequest(f"generate: {name!r} is not supported on this device")
    prompt, system = body.get("prompt", ""), body.get("system", "")
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise BadRequest("generate: 'prompt' and 'system' must be strings")
    if not isinstance(body.get("raw", False), bool):
        raise BadRequest("generate: 'raw' must be true or false")
    if not prompt and not system:
        return Call(model, Task.TEXT, {}, body.get("stream", True))  # a load request
    if body.get("raw") or not chat_template:
        params: dict[str, Any] = {"prompt": system + prompt}
    else:
        turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        params = {"messages": turns}
    return Call(model, Task.TEXT, {**params, **options}, body.get("stream", True))


# -- answers -------------------------------------------------------------------------------
def created_at() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def chunk(model: str, text: str, chat: bool) -> dict[str, Any]:
    body = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
    return {"model": model, "created_at": created_at(), **body, "done": False}


def final(model: str, result: Result | None, chat: bool, total_s: float, text: str = "") -> dict[str, Any]:
    """The last line (or the whole answer with ``stream: false``): the counts and durations in
    nanoseconds as Ollama reports them; ``done_reason`` "load" for a request with nothing to say."""
    meta = result.meta if result is not None else {}
    reason = "load" if result is None else ("length" if meta.get("finish_reason") == "length" else "stop")
    prefill = float(meta.get("prefill_seconds", 0.0))
    out = {**chunk(model, text, chat), "done": True, "done_reason": reason, "total_duration": int(total_s * 1e9),
           "load_duration": 0}
    if result is not None:
        out.update(prompt_eval_count=int(meta.get("prompt_tokens", 0)), prompt_eval_duration=int(prefill * 1e9),
                   eval_count=int(meta.get("generated_tokens", 0)),
                   eval_duration=int(max(float(meta.get("seconds", 0.0)) - prefill, 0.0) * 1e9))
    return out


def model_entry(info: dict[str, Any], size: int, digest: str, modified: str, running: bool = False) -> dict[str, Any]:
    """One model as ``/api/tags`` (and ``/api/ps``, ``running``) lists it."""
    details = {"parent_model": "", "format": info["format"], "family": "", "families": None,
               "parameter_size": "", "quantization_level": info["recipe"]}
    entry = {"name": info["name"], "model": info["name"], "modified_at": modified or created_at(), "size": size,
             "digest": digest, "details": details}
    if running:
        entry.update(expires_at="0001-01-01T00:00:00Z", size_vram=0)  # loaded for as long as the device runs
    return entry
