"""The contract's vocabulary, defined once: tasks, formats, recipes, actions, event kinds,
bundle file names and KV-cache tensor name templates.

Every module that speaks one of these words imports it from here. The enums are
``StrEnum``s, so a member equals its string (``Task.TEXT == "text-generation"``) and JSON,
TOML and manifests keep plain strings. What each word means on the wire: docs/bundle.md
(tasks, formats, recipes, file names, templates) and docs/protocol.md (actions, events).
"""
from __future__ import annotations

from enum import StrEnum

__all__ = ["Task", "register_task", "unregister_task", "known_tasks", "bundle_tasks", "also_serves", "Format", "Recipe", "Action", "EventKind", "JobState", "FINAL_JOB_STATES", "MANIFEST", "SIGNATURE", "TOKENIZER",
           "model_file", "KV_INPUTS", "KV_OUTPUTS", "kv_name"]


class Task(StrEnum):
    TEXT = "text-generation"
    IMAGE = "image-generation"
    AUDIO = "audio-generation"
    SPEECH = "speech-synthesis"
    VIDEO = "video-generation"   # no bundle of its own: image generators serve it


# Which names are tasks. Each task registers itself with its TaskSpec (edge_aigc/tasks/spec.py),
# the built-in ones when edge_aigc is imported; a task is a bundle task (a manifest may name it),
# or one that a bundle task's models also serve (a request picks it with its "task" field;
# docs/protocol.md). Read it through the functions below, never as a copy.
_TASKS: dict[str, str | None] = {}   # task -> the bundle task whose models serve it (None: its own)


def register_task(name: str, served_by: str | None = None) -> None:
    if served_by is not None and _TASKS.get(served_by, "") is not None:
        raise ValueError(f"task {name!r}: {served_by!r} is not a registered bundle task")
    _TASKS[name] = served_by


def unregister_task(name: str) -> None:
    _TASKS.pop(name, None)


def known_tasks() -> tuple[str, ...]:
    return tuple(_TASKS)


def bundle_tasks() -> tuple[str, ...]:
    """What a bundle's manifest may name as its task."""
    return tuple(t for t, base in _TASKS.items() if base is None)


def also_serves(task: str) -> tuple[str, ...]:
    """The tasks a model of bundle task ``task`` also serves."""
    return tuple(t for t, base in _TASKS.items() if base == task)


class Format(StrEnum):
    ONNX = "onnx"
    TFLITE = "tflite"
    GGUF = "gguf"      # a GGUF file, run by llama.cpp (text models)


class Recipe(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    INT4 = "int4"


class Action(StrEnum):
    """What a request over MQTT asks the device to do (the ``action`` field)."""

    GENERATE = "generate"
    CANCEL = "cancel"
    STATUS = "status"
    MODELS = "models"
    LOAD = "load"
    UNLOAD = "unload"
    INSTALL = "install"     # a bundle sent in chunks, verified, then activated (docs/deploy.md)
    ROLLBACK = "rollback"   # make a model's previous version active again


class EventKind(StrEnum):
    """The ``event`` field of what the device sends back, in the order a request sees them."""

    ACCEPTED = "accepted"
    PROGRESS = "progress"
    TOKEN = "token"
    CHUNK = "chunk"       # a part of the output, ready before the rest (speech: one sentence's audio)
    RESULT = "result"
    ERROR = "error"
    NEED = "need"         # install: the chunks the device asks for next


class JobState(StrEnum):
    """The ``state`` of an install job, on its retained ``<root>/jobs/<job>`` topic, in order.
    The last three are final."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    ACTIVATING = "activating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"            # refused before activation: the old version never stopped serving
    ROLLED_BACK = "rolled-back"  # activated, then failed: the previous version is active again


FINAL_JOB_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK)


# File names inside a bundle.
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TOKENIZER = "tokenizer.json"


def model_file(fmt: str) -> str:
    """The model's file name in a bundle of format ``fmt`` (``model.onnx``, ``model.tflite``)."""
    return f"model.{Format(fmt)}"


# KV-cache tensor names of an exported LM (Hugging Face Optimum's), written into each text
# bundle's task_config as kv_inputs / kv_outputs and read back from there by the runtime.
KV_INPUTS = "past_key_values.{layer}.{kind}"
KV_OUTPUTS = "present.{layer}.{kind}"


def kv_name(template: str, layer: int, kind: str) -> str:
    """One cache tensor's name: ``kind`` is ``key`` or ``value``."""
    return template.format(layer=layer, kind=kind)
