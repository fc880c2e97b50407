"""Seeded input samplers, for int8-static calibration and the fidelity gate (each task's
GateSpec names its sampler: gate/specs.py):

- image: latents ~ N(0, 1) and class labels cycling through the classes (indices, or one-hot
  rows for a class input that takes weights, task_config.class_input);
- audio: random melodies turned into ``f0``/``loudness`` frames with the runtime's own
  note code (models with other inputs get seeded noise of the example shapes);
- speech: real sentences (converters/gate_sentences.json) as phoneme ids, seeded noise;
- text: windows of real text (the source's corpus, else a built-in multilingual set)
  run as a prefill with an empty KV cache.

Calibration and validation use different seeds, so the gate does not grade a model on
the very inputs its quantization ranges were fitted to.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from edge_aigc.backends import open_session
from edge_aigc.contract import KV_INPUTS, Task, kv_name
from edge_aigc.tasks.notes import note_frames, random_notes

from ..sources.types import Source

__all__ = ["text_feeds", "generator_feeds", "speech_feeds", "CALIBRATION_SEED", "VALIDATION_SEED"]

CALIBRATION_SEED, VALIDATION_SEED = 1234, 5678
BUILTIN_TEXTS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "A journey of a thousand miles begins with a single step, or so the proverb says.",
    "Edge devices run small models close to the sensors, without a round trip to the cloud.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Please remember to water the plants on Tuesday and to feed the cat twice a day.",
    "In 1969 the first humans walked on the Moon and returned safely to Earth.",
    "Le petit chat dort au soleil pendant que les enfants jouent dans le jardin.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El conocimiento es poder, pero la imaginación es más importante que el conocimiento.",
    "今天天气很好，我们去公园散步吧。",
    "Fortune favors the bold, but caution keeps the bold alive a little longer.",
    "Q: What is the capital of France? A: The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Once upon a time, in a kingdom by the sea, there lived a curious young inventor.",
    "You will meet a tall dark stranger. Your lucky number is seven.",
    "Rain is expected this evening, with clearing skies and light winds by morning.",
]


def _session_inputs(model_path: Path):
    return open_session("tflite" if model_path.suffix == ".tflite" else "onnx", model_path, None, "calibration").inputs


def _dim(source: Source, name: str, axis: int, dim) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    gen = source.generator
    if gen is not None and name in gen.example_inputs and axis > 0:
        return int(gen.example_inputs[name].shape[axis])
    return 1 if axis == 0 else 16


def text_feeds(source: Source, model_path: Path, n: int, rng: np.random.Generator,
               window: int = 48) -> Iterator[dict]:
    """Windows of real text as prefills (an LM without its spec: the generic seeded inputs)."""
    if source.lm is None:
        yield from generator_feeds(source, model_path, n, rng)
        return
    spec = source.lm
    texts = source.task_config.get("calibration_texts") or BUILTIN_TEXTS
    ids: list[int] = []
    for text in texts:
        ids += source.tokenizer.encode(text).ids if source.tokenizer else []
    ids = [i for i in ids if i < spec.vocab_size]
    if len(ids) < window:  # no usable tokenizer: seeded token ids still exercise every weight
        ids = rng.integers(0, spec.vocab_size, 4 * window).tolist()
    corpus = np.array(ids, np.int64)
    empty = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    names = [kv_name(KV_INPUTS, i, k) for i in range(spec.num_layers) for k in ("key", "value")]
    for _ in range(n):
        length = int(min(window, len(corpus)))
        start = int(rng.integers(0, len(corpus) - length + 1))
        seq = corpus[start:start + length][None]
        yield {"input_ids": seq, "attention_mask": np.ones_like(seq),
               "position_ids": np.arange(length, dtype=np.int64)[None], **{k: empty for k in names}}


def generator_feeds(source: Source, model_path: Path, n: int, rng: np.random.Generator,
                    notes: bool = False) -> Iterator[dict]:
    """Seeded latents and class labels; ``notes``: a vocoder's ``f0``/``loudness`` from random
    melodies where the model has those inputs."""
    inputs = _session_inputs(model_path)
    cfg = source.task_config
    classes = int(cfg.get("num_classes") or len(cfg.get("class_labels", [])) or 10)
    names = {i.name for i in inputs}
    audio_notes = notes and {"f0", "loudness"} <= names
    for k in range(n):
        feed: dict[str, np.ndarray] = {}
        if audio_notes:
            frame_rate = cfg["sample_rate"] / cfg["hop_length"]
            f0, loud = note_frames(random_notes(rng, seconds=1.0), frame_rate)
            feed.update(f0=f0[None], loudness=loud[None])
        for inp in inputs:
            if inp.name in feed:
                continue
            shape = [_dim(source, inp.name, ax, d) for ax, d in enumerate(inp.shape)]
            if "int" in inp.dtype:
                dtype = np.int32 if inp.dtype == "int32" else np.int64
                feed[inp.name] = ((np.arange(np.prod(shape)) + k) % classes).reshape(shape).astype(dtype)
            elif inp.name == cfg.get("class_input"):  # class weights: one-hot rows, the classes in turn
                feed[inp.name] = np.eye(classes, dtype=np.float32)[(np.arange(shape[0]) + k) % classes]
            else:
                feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        yield feed


def speech_feeds(source: Source, model_path: Path, n: int, rng: np.random.Generator) -> Iterator[dict]:
    """The gate's real sentences (each text's first espeak sentence), the voice's default
    scales, seeded noise."""
    from edge_aigc.tasks import espeak
    from edge_aigc.bundle.task_config import parse_task_config
    from edge_aigc.tasks.speech import DEFAULTS, voice_feeds

    from ..sources.piper import gate_sentences

    cfg = parse_task_config(Task.SPEECH, source.task_config)
    texts = gate_sentences()
    scales = {**DEFAULTS, **cfg.inference}
    for k in range(n):
        phonemes = espeak.phonemize(texts[k % len(texts)], cfg.espeak_voice)[0]
        ids, _ = espeak.phoneme_ids(phonemes, cfg.phoneme_id_map)
        yield voice_feeds(cfg, ids, scales, rng, 0 if cfg.num_speakers > 1 else None)
