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

__all__ = ["TextConfig", "ImageConfig", "AudioConfig", "SpeechConfig", "TaskConfig", "SCHEMAS", "parse_task_config",
           "KV_LAYOUTS"]

KV_LAYOUTS = ("concat", "shared")
_NUM = (int, float)


def _kinds(*types: type) -> dict[str, Any]:
    return {"types": types}


@dataclass(frozen=True, kw_only=True)
class _Common:
    """Keys every task's config may carry."""

    # the model file in the bundle; written by the packager (model.onnx / model.tflite)
    model: str = field(default="", metadata=_kinds(str))
    # TFLite: the exported signatures (batch_1, batch_8, prefill_<n>, decode)
    signatures: tuple[str, ...] = field(default=(), metadata=_kinds(list))
    # host-side hints a source gave the converter, kept as a record of how it was built
    quantize: dict = field(default_factory=dict, metadata=_kinds(dict))
    calibration_texts: tuple[str, ...] = field(default=(), metadata=_kinds(list))


@dataclass(frozen=True, kw_only=True)
class TextConfig(_Common):
    task: ClassVar[Task] = Task.TEXT
    vocab_size: int = field(metadata=_kinds(int))
    max_context: int = field(metadata=_kinds(int))
    num_layers: int = field(metadata=_kinds(int))
    num_kv_heads: int = field(metadata=_kinds(int))
    head_dim: int = field(metadata=_kinds(int))
    tokenizer: str = field(default=TOKENIZER, metadata=_kinds(str))
    # one id or every id that ends generation (a model's generation config may list several)
    eos_token_id: tuple[int, ...] = field(default=(), metadata=_kinds(int, list, type(None)))
    bos_token_id: int | None = field(default=None, metadata=_kinds(int, type(None)))
    architecture: str = field(default="", metadata=_kinds(str))
    kv_layout: str = field(default="concat", metadata=_kinds(str))
    kv_inputs: str = field(default=KV_INPUTS, metadata=_kinds(str))
    kv_outputs: str = field(default=KV_OUTPUTS, metadata=_kinds(str))
    # request-parameter defaults from the model (generate()'s own), by parameter name
    sampling: dict = field(default_factory=dict, metadata=_kinds(dict))
    # the model's chat template (Hugging Face / jinja2 semantics), "" when it has none
    chat_template: str = field(default="", metadata=_kinds(str))


@dataclass(frozen=True, kw_only=True)
class ImageConfig(_Common):
    task: ClassVar[Task] = Task.IMAGE
    latent_dim: int | None = field(default=None, metadata=_kinds(int, type(None)))  # default: the input's
    num_classes: int = field(default=0, metadata=_kinds(int))
    class_labels: tuple[str, ...] = field(default=(), metadata=_kinds(list))
    output_range: tuple[float, float] = field(default=(-1.0, 1.0), metadata=_kinds(list))
    # the input that takes the class (default: the integer input, an index). A float input
    # [batch, num_classes] named here takes class weights, so a video may blend two classes
    class_input: str = field(default="", metadata=_kinds(str))
    # descriptive: what the generator makes (the runtime reads the size off the output)
    image_size: tuple[int, ...] = field(default=(), metadata=_kinds(list))
    channels: int | None = field(default=None, metadata=_kinds(int, type(None)))


@dataclass(frozen=True, kw_only=True)
class AudioConfig(_Common):
    task: ClassVar[Task] = Task.AUDIO
    sample_rate: int = field(metadata=_kinds(int))
    hop_length: int = field(metadata=_kinds(int))
    max_seconds: float = field(default=30.0, metadata=_kinds(*_NUM))
    # descriptive: how the generator is conditioned, and its excitation's harmonics
    conditioning: str = field(default="notes", metadata=_kinds(str))
    harmonics: int | None = field(default=None, metadata=_kinds(int, type(None)))


@dataclass(frozen=True, kw_only=True)
class SpeechConfig(_Common):
    """A Piper-style voice (converters/sources/piper.py): phoneme ids in, a waveform out."""

    task: ClassVar[Task] = Task.SPEECH
    sample_rate: int = field(metadata=_kinds(int))
    espeak_voice: str = field(metadata=_kinds(str))
    phoneme_id_map: dict = field(metadata=_kinds(dict))   # phoneme -> [id, ...]
    hop_length: int = field(default=256, metadata=_kinds(int))
    num_speakers: int = field(default=1, metadata=_kinds(int))
    speaker_id_map: dict = field(default_factory=dict, metadata=_kinds(dict))  # name -> id
    # request-parameter defaults from the voice (length_scale, noise_scale, noise_w)
    inference: dict = field(default_factory=dict, metadata=_kinds(dict))
    # graph inputs that replaced the voice's random ops: name -> [channels, "phonemes" | "frames"]
    noise_inputs: dict = field(default_factory=dict, metadata=_kinds(dict))
    # frames per phoneme id at length_scale 1, an upper estimate (sizes the frame noise)
    frames_per_id: float = field(default=8.0, metadata=_kinds(*_NUM))
    max_chars: int = field(default=4096, metadata=_kinds(int))
    phonemizer: str = field(default="", metadata=_kinds(str))  # what phonemized the gate's sentences


TaskConfig = Union[TextConfig, ImageConfig, AudioConfig, SpeechConfig]
SCHEMAS: dict[Task, type] = {Task.TEXT: TextConfig, Task.IMAGE: ImageConfig, Task.AUDIO: AudioConfig,
                             Task.SPEECH: SpeechConfig}


def _bad(key: str, why: str) -> CorruptBundle:
    return CorruptBundle(f"manifest field 'task_config.{key}': {why}")


def _value(key: str, value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, bool) and bool not in types:  # JSON true is not a count
        raise _bad(key, f"expected {' or '.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise _bad(key, f"expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")
    if isinstance(value, list):
        return tuple(value)
    return value


def _check(cfg: Any) -> None:
    if isinstance(cfg, TextConfig):
        if cfg.kv_layout not in KV_LAYOUTS:
            raise _bad("kv_layout", f"unknown kv_layout {cfg.kv_layout!r} (known: {', '.join(KV_LAYOUTS)})")
        for key in ("vocab_size", "max_context", "num_layers", "num_kv_heads", "head_dim"):
            if getattr(cfg, key) < 1:
                raise _bad(key, f"must be at least 1, got {getattr(cfg, key)}")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in cfg.eos_token_id):
            raise _bad("eos_token_id", "expected token ids")
    if isinstance(cfg, ImageConfig) and (len(cfg.output_range) != 2
                                         or not all(isinstance(v, _NUM) for v in cfg.output_range)):
        raise _bad("output_range", "expected [low, high]")
    if isinstance(cfg, AudioConfig) and (cfg.sample_rate < 1 or cfg.hop_length < 1):
        raise _bad("sample_rate" if cfg.sample_rate < 1 else "hop_length", "must be at least 1")
    if isinstance(cfg, SpeechConfig):
        for key in ("sample_rate", "hop_length", "num_speakers", "max_chars"):
            if getattr(cfg, key) < 1:
                raise _bad(key, f"must be at least 1, got {getattr(cfg, key)}")
        if not all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in cfg.phoneme_id_map.values()):
            raise _bad("phoneme_id_map", "expected phoneme -> [id, ...]")
        if not all(isinstance(v, int) and 0 <= v < cfg.num_speakers for v in cfg.speaker_id_map.values()):
            raise _bad("speaker_id_map", f"expected name -> id in [0, {cfg.num_speakers})")
        for name, spec in cfg.noise_inputs.items():
            if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], int)
                    and spec[1] in ("phonemes", "frames")):
                raise _bad(f"noise_inputs.{name}", 'expected [channels, "phonemes" | "frames"]')


def parse_task_config(task: str, raw: dict[str, Any]) -> TaskConfig:
    """The typed config of ``task``; a CorruptBundle names the first key that is wrong."""
    schema = SCHEMAS.get(task)  # type: ignore[call-overload]
    if schema is None:
        raise CorruptBundle(f"manifest field 'task': no task_config schema for {task!r}")
    known = {f.name: f for f in fields(schema)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise _bad(unknown[0], f"unknown key for {task} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in raw:
            values[name] = _value(name, raw[name], f.metadata["types"])
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _bad(name, f"missing (required for {task})")
    if isinstance(values.get("eos_token_id"), int):
        values["eos_token_id"] = (values["eos_token_id"],)
    elif values.get("eos_token_id", ()) is None:
        values["eos_token_id"] = ()
    cfg = schema(**values)
    _check(cfg)
    return cfg
