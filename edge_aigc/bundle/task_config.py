"""``task_config``: what each task needs from its bundle, one typed schema per task.

Parsed when a bundle's manifest is read (and when a conversion packages one), as strictly
as the manifest itself: a missing required key, an unknown key or a value of the wrong type
is a ``CorruptBundle`` (a ``BundleError``) naming ``task_config.<key>``. Tasks and decode loops read the typed
object, never the raw dict. Reference: docs/bundle.md.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union

from ..contract import KV_INPUTS, KV_OUTPUTS, TOKENIZER, Task
from ..errors import CorruptBundle

__all__ = ["TextConfig", "ImageConfig", "AudioConfig", "SpeechConfig", "TaskConfig", "register_schema",
           "parse_task_config", "KV_LAYOUTS", "kinds", "bad", "TaskConfigBase"]

KV_LAYOUTS = ("concat", "shared")
_NUM = (int, float)


def kinds(*types: type) -> dict[str, Any]:
    """A field's metadata: the JSON types its value may have."""
    return {"types": types}


@dataclass(frozen=True, kw_only=True)
class TaskConfigBase:
    """Keys every task's config may carry. A task's schema subclasses it (frozen, keyword-only,
    each field's ``metadata=kinds(...)``) and may add a ``check`` that raises :func:`bad`."""

    # the model file in the bundle; written by the packager (model.onnx / model.tflite)
    model: str = field(default="", metadata=kinds(str))
    # TFLite: the exported signatures (batch_1, batch_8, prefill_<n>, decode)
    signatures: tuple[str, ...] = field(default=(), metadata=kinds(list))
    # host-side hints a source gave the converter, kept as a record of how it was built
    quantize: dict = field(default_factory=dict, metadata=kinds(dict))
    calibration_texts: tuple[str, ...] = field(default=(), metadata=kinds(list))

    def check(self) -> None:
        """What a field's type cannot say; raises :func:`bad` naming the key."""


@dataclass(frozen=True, kw_only=True)
class TextConfig(TaskConfigBase):
    task: ClassVar[Task] = Task.TEXT
    vocab_size: int = field(metadata=kinds(int))
    max_context: int = field(metadata=kinds(int))
    num_layers: int = field(metadata=kinds(int))
    num_kv_heads: int = field(metadata=kinds(int))
    head_dim: int = field(metadata=kinds(int))
    tokenizer: str = field(default=TOKENIZER, metadata=kinds(str))
    # one id or every id that ends generation (a model's generation config may list several)
    eos_token_id: tuple[int, ...] = field(default=(), metadata=kinds(int, list, type(None)))
    bos_token_id: int | None = field(default=None, metadata=kinds(int, type(None)))
    architecture: str = field(default="", metadata=kinds(str))
    kv_layout: str = field(default="concat", metadata=kinds(str))
    kv_inputs: str = field(default=KV_INPUTS, metadata=kinds(str))
    kv_outputs: str = field(default=KV_OUTPUTS, metadata=kinds(str))
    # request-parameter defaults from the model (generate()'s own), by parameter name
    sampling: dict = field(default_factory=dict, metadata=kinds(dict))
    # the model's chat template (Hugging Face / jinja2 semantics), "" when it has none
    chat_template: str = field(default="", metadata=kinds(str))

    def check(self) -> None:
        if self.kv_layout not in KV_LAYOUTS:
            raise bad("kv_layout", f"unknown kv_layout {self.kv_layout!r} (known: {', '.join(KV_LAYOUTS)})")
        for key in ("vocab_size", "max_context", "num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be at least 1, got {getattr(self, key)}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.eos_token_id):
            raise bad("eos_token_id", "expected token ids")


@dataclass(frozen=True, kw_only=True)
class ImageConfig(TaskConfigBase):
    task: ClassVar[Task] = Task.IMAGE
    latent_dim: int | None = field(default=None, metadata=kinds(int, type(None)))  # default: the input's
    num_classes: int = field(default=0, metadata=kinds(int))
    class_labels: tuple[str, ...] = field(default=(), metadata=kinds(list))
    output_range: tuple[float, float] = field(default=(-1.0, 1.0), metadata=kinds(list))
    # the input that takes the class (default: the integer input, an index). A float input
    # [batch, num_classes] named here takes class weights, so a video may blend two classes
    class_input: str = field(default="", metadata=kinds(str))
    # descriptive: what the generator makes (the runtime reads the size off the output)
    image_size: tuple[int, ...] = field(default=(), metadata=kinds(list))
    channels: int | None = field(default=None, metadata=kinds(int, type(None)))

    def check(self) -> None:
        if len(self.output_range) != 2 or not all(isinstance(v, _NUM) for v in self.output_range):
            raise bad("output_range", "expected [low, high]")


@dataclass(frozen=True, kw_only=True)
class AudioConfig(TaskConfigBase):
    task: ClassVar[Task] = Task.AUDIO
    sample_rate: int = field(metadata=kinds(int))
    hop_length: int = field(metadata=kinds(int))
    max_seconds: float = field(default=30.0, metadata=kinds(*_NUM))
    # descriptive: how the generator is conditioned, and its excitation's harmonics
    conditioning: str = field(default="notes", metadata=kinds(str))
    harmonics: int | None = field(default=None, metadata=kinds(int, type(None)))

    def check(self) -> None:
        if self.sample_rate < 1 or self.hop_length < 1:
            raise bad("sample_rate" if self.sample_rate < 1 else "hop_length", "must be at least 1")


@dataclass(frozen=True, kw_only=True)
class SpeechConfig(TaskConfigBase):
    """A Piper-style voice (converters/sources/piper.py): phoneme ids in, a waveform out."""

    task: ClassVar[Task] = Task.SPEECH
    sample_rate: int = field(metadata=kinds(int))
    espeak_voice: str = field(metadata=kinds(str))
    phoneme_id_map: dict = field(metadata=kinds(dict))   # phoneme -> [id, ...]
    hop_length: int = field(default=256, metadata=kinds(int))
    num_speakers: int = field(default=1, metadata=kinds(int))
    speaker_id_map: dict = field(default_factory=dict, metadata=kinds(dict))  # name -> id
    # request-parameter defaults from the voice (length_scale, noise_scale, noise_w)
    inference: dict = field(default_factory=dict, metadata=kinds(dict))
    # graph inputs that replaced the voice's random ops: name -> [channels, "phonemes" | "frames"]
    noise_inputs: dict = field(default_factory=dict, metadata=kinds(dict))
    # frames per phoneme id at length_scale 1, an upper estimate (sizes the frame noise)
    frames_per_id: float = field(default=8.0, metadata=kinds(*_NUM))
    max_chars: int = field(default=4096, metadata=kinds(int))
    phonemizer: str = field(default="", metadata=kinds(str))  # what phonemized the gate's sentences

    def check(self) -> None:
        for key in ("sample_rate", "hop_length", "num_speakers", "max_chars"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be at least 1, got {getattr(self, key)}")
        if not all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in self.phoneme_id_map.values()):
            raise bad("phoneme_id_map", "expected phoneme -> [id, ...]")
        if not all(isinstance(v, int) and 0 <= v < self.num_speakers for v in self.speaker_id_map.values()):
            raise bad("speaker_id_map", f"expected name -> id in [0, {self.num_speakers})")
        for name, spec in self.noise_inputs.items():
            if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], int)
                    and spec[1] in ("phonemes", "frames")):
                raise bad(f"noise_inputs.{name}", 'expected [channels, "phonemes" | "frames"]')


TaskConfig = Union[TextConfig, ImageConfig, AudioConfig, SpeechConfig]
_SCHEMAS: dict[str, type] = {}   # filled by tasks/spec.register: one schema per bundle task


def register_schema(task: str, schema: type | None) -> None:
    """``schema`` parses ``task``'s task_config from now on (None: forget it)."""
    if schema is None:
        _SCHEMAS.pop(task, None)
    else:
        _SCHEMAS[task] = schema


def bad(key: str, why: str) -> CorruptBundle:
    return CorruptBundle(f"manifest field 'task_config.{key}': {why}")


def _value(key: str, value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in types:  # JSON true is not a count
        raise bad(key, f"expected {' or '.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise bad(key, f"expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")
    if isinstance(value, list):
        return tuple(value)
    return value


def parse_task_config(task: str, raw: dict[str, Any]) -> TaskConfig:
    """The typed config of ``task``; a CorruptBundle names the first key that is wrong."""
    schema = _SCHEMAS.get(task)
    if schema is None:
        raise CorruptBundle(f"manifest field 'task': no task_config schema for {task!r}")
    known = {f.name: f for f in fields(schema)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise bad(unknown[0], f"unknown key for {task} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in raw:
            values[name] = _value(name, raw[name], f.metadata["types"])
        elif f.default is MISSING and f.default_factory is MISSING:
            raise bad(name, f"missing (required for {task})")
    if isinstance(values.get("eos_token_id"), int):
        values["eos_token_id"] = (values["eos_token_id"],)
    elif values.get("eos_token_id", ()) is None:
        values["eos_token_id"] = ()
    cfg = schema(**values)
    cfg.check()
    return cfg
