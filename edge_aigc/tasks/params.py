"""Request parameters: each declared once with its type, default and range.

The CLI builds its options from these specs, the API and the MQTT service validate with
them, and a bad value raises ``BadRequest`` naming the parameter. Every numeric
parameter is capped, so no request can ask for unbounded work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import Task
from ..errors import BadRequest

__all__ = ["Param", "TASK_PARAMS", "validate_params", "is_text"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: type                 # str, int, float, bool, list (of str)
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    help: str = ""
    required: bool = False
    max_len: int | None = None  # str: characters; list: items (each str ≤ 64 chars)
    items: str = "str"          # list: "str", or "message" ({"role", "content"} chat turns)
    choices: tuple[str, ...] = ()  # str: the values allowed
    commas: bool = False        # list: the CLI also takes the items comma-separated (--labels 0,1,2)


MAX_SPEECH_CHARS = 20_000
MAX_FRAMES = 240


def _text_params() -> list[Param]:
    return [
        Param("prompt", str, max_len=8192, help="text to continue (or give messages)"),
        Param("messages", list, None, max_len=64, items="message",
              help="chat turns [{role, content}] rendered with the model's chat template"),
        Param("max_new_tokens", int, 64, 1, 2048, "tokens to generate (capped by the context)"),
        Param("temperature", float, 0.8, 0.0, 5.0, "0 = greedy; higher = more random"),
        Param("top_k", int, 40, 0, 100_000, "sample from the k most likely tokens (0 = all)"),
        Param("top_p", float, 0.95, 0.01, 1.0, "nucleus sampling mass"),
        Param("repetition_penalty", float, 1.0, 0.5, 3.0, "> 1 discourages repeats"),
        Param("seed", int, None, 0, 2**32 - 1, "seed for reproducible sampling"),
        Param("num_beams", int, 1, 1, 8, "beam search width (1 = no beam search)"),
        Param("stop", list, [], help="stop strings (up to 4, each up to 64 characters)", max_len=4),
        Param("session", str, None, max_len=64,
              help="chat session id: later turns reuse its KV cache (edge_aigc/tasks/text/sessions.py)"),
    ]


TASK_PARAMS: dict[str, list[Param]] = {
    Task.TEXT: _text_params(),
    Task.IMAGE: [
        Param("label", str, None, help="class label name or index (conditional models)", max_len=64),
        Param("seed", int, None, 0, 2**32 - 1, "latent seed"),
        Param("count", int, 1, 1, 64, "images to generate"),
        Param("grid", bool, True, help="one PNG grid of all images (else one PNG each)"),
        Param("scale", int, 1, 1, 16, "upscale factor (nearest neighbour) for small images"),
    ],
    Task.VIDEO: [
        Param("label", str, None, help="class of a latent walk (conditional models)", max_len=64),
        Param("labels", list, None, max_len=16, commas=True,
              help="classes to morph through, in order, e.g. 0,1,2 (models whose class input takes weights)"),
        Param("seed", int, None, 0, 2**32 - 1, "latent seed"),
        Param("frames", int, 48, 2, MAX_FRAMES, "frames to render"),
        Param("fps", int, 12, 1, 50, "frames per second"),
        Param("keyframes", int, 4, 2, 16, "latents a walk passes through"),
        Param("loop", bool, True, help="end where it starts and play forever (GIF)"),
        Param("scale", int, 3, 1, 16, "upscale factor (nearest neighbour)"),
        Param("format", str, "gif", choices=("gif", "mp4"),
              help="gif (Pillow) or mp4 (H.264; the video extra)"),
    ],
    Task.AUDIO: [
        Param("notes", str, required=True, max_len=4096,
              help="note sequence, e.g. 'C4:0.5 E4:0.5 G4:1.0' (R:0.5 is a rest)"),
        Param("gain", float, 1.0, 0.0, 4.0, "output gain before 16-bit conversion"),
    ],
    Task.SPEECH: [
        # the voice's own cap (task_config.max_chars, ≤ this) is checked by the task
        Param("text", str, required=True, max_len=MAX_SPEECH_CHARS, help="text to speak (split into sentences)"),
        Param("speaker", str, None, max_len=64, help="speaker name or index (multi-speaker voices)"),
        Param("length_scale", float, None, 0.25, 4.0, "phoneme length: < 1 faster, > 1 slower (voice default)"),
        Param("noise_scale", float, None, 0.0, 2.0, "generator noise (voice default)"),
        Param("noise_w", float, None, 0.0, 2.0, "phoneme duration noise (voice default)"),
        Param("sentence_silence", float, 0.0, 0.0, 5.0, "seconds of silence after each sentence"),
        Param("seed", int, None, 0, 2**32 - 1, "noise seed for reproducible speech"),
        Param("normalize", bool, True, help="scale each sentence to full range, as Piper does"),
    ],
}


def is_text(value: str) -> bool:
    """False for a string JSON allows but Unicode does not: one holding a lone surrogate (\\ud800)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _coerce(p: Param, value: Any) -> Any:
    if p.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if p.kind is str and p.name in ("label", "speaker") and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a class index given as a number
    if not isinstance(value, p.kind) or (p.kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"parameter {p.name!r}: expected {p.kind.__name__}, got {type(value).__name__}")
    if p.kind in (int, float):
        if value != value or (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi):
            raise BadRequest(f"parameter {p.name!r}: {value!r} is out of range [{p.lo:g}, {p.hi:g}]")
    if p.kind is str and p.max_len is not None and len(value) > p.max_len:
        raise BadRequest(f"parameter {p.name!r}: longer than {p.max_len} characters")
    if p.choices and value not in p.choices:
        raise BadRequest(f"parameter {p.name!r}: {value!r} is not one of {', '.join(p.choices)}")
    if any(isinstance(v, str) and not is_text(v) for v in (value if p.kind is list else [value])):
        raise BadRequest(f"parameter {p.name!r}: holds a lone UTF-16 surrogate; not valid Unicode text")
    if p.kind is list and p.items == "message":
        return _messages(p, value)
    if p.kind is list:
        if len(value) > (p.max_len or 0) or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
            raise BadRequest(f"parameter {p.name!r}: expected up to {p.max_len} non-empty strings "
                             "of at most 64 characters")
    return value


MAX_CHAT_CHARS = 32768


def _messages(p: Param, value: list) -> list[dict[str, str]]:
    """Chat turns: 1..max_len objects of exactly a known ``role`` and a string ``content``."""
    from .text.chat import ROLES

    if not value or len(value) > (p.max_len or 0):
        raise BadRequest(f"parameter {p.name!r}: expected 1 to {p.max_len} messages, got {len(value)}")
    total = 0
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise BadRequest(f"parameter {p.name!r}: message {i} must be an object of exactly 'role' and 'content'")
        if m["role"] not in ROLES:
            raise BadRequest(f"parameter {p.name!r}: message {i} has role {m['role']!r} "
                             f"(known: {', '.join(ROLES)})")
        if not isinstance(m["content"], str) or not is_text(m["content"]):
            raise BadRequest(f"parameter {p.name!r}: message {i}'s content must be text")
        total += len(m["content"])
    if total > MAX_CHAT_CHARS:
        raise BadRequest(f"parameter {p.name!r}: {total} characters of content; at most {MAX_CHAT_CHARS}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


# Parameters of which a request gives exactly one.
ONE_OF = {Task.TEXT: ("prompt", "messages")}


def validate_params(task: str, params: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checked parameters with defaults filled in (bundle defaults override the spec's)."""
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    specs = {p.name: p for p in TASK_PARAMS[task]}
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} for {task} "
                         f"(known: {', '.join(specs)})")
    out: dict[str, Any] = {}
    for name, p in specs.items():
        if name in params and params[name] is not None:
            out[name] = _coerce(p, params[name])
        elif p.required:
            raise BadRequest(f"parameter {name!r} is required for {task}")
        else:
            default = (defaults or {}).get(name, p.default)
            out[name] = list(default) if isinstance(default, list) else default
    for group in [ONE_OF[task]] if task in ONE_OF else []:
        given = [n for n in group if out.get(n) is not None]
        if len(given) != 1:
            raise BadRequest(f"parameter {group[0]!r} is required for {task} (or give "
                             f"{' or '.join(repr(n) for n in group[1:])})" if not given else
                             f"give one of {', '.join(repr(n) for n in group)}, not both")
    return out
