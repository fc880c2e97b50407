"""Speech synthesis: text → sentences of espeak-ng phonemes → a Piper-style voice → 16-bit WAV.

Each sentence is synthesized on its own and yielded as a ``Chunk`` (its WAV, then the
sentence silence) as soon as it is ready, so playback can start before the end; the
``Result`` carries the whole text's WAV. The voice's random ops were turned into inputs at
conversion (converters/sources/piper.py), so the noise comes from a seeded numpy generator:
the same ``seed`` gives the same audio on every backend and recipe.
"""
from __future__ import annotations

import re
import secrets
import time
import unicodedata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import espeak
from ..backends.base import Session
from ..contract import Task
from ..errors import BadRequest, BundleError
from ..bundle.task_config import SpeechConfig
from .audio import audio_figures, silent, to_wav
from .base import CancelToken, Chunk, Event, Output, Result
from .params import Param
from .spec import TaskSpec, register

__all__ = ["SpeechTask", "voice_feeds"]

_INPUTS = {"input", "input_lengths", "scales"}
DEFAULTS = {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8}  # Piper's


def voice_feeds(cfg: SpeechConfig, ids: list[int], scales: dict[str, float], rng: np.random.Generator,
                speaker: int | None = None) -> dict[str, np.ndarray]:
    """One sentence's inputs: ids, their length, the three scales, the speaker and the noise."""
    feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
             "scales": np.array([scales["noise_scale"], scales["length_scale"], scales["noise_w"]], np.float32)}
    if speaker is not None:
        feeds["sid"] = np.array([speaker], np.int64)
    for name, (channels, axis) in sorted(cfg.noise_inputs.items()):
        length = len(ids) if axis == "phonemes" else int(np.ceil(len(ids) * cfg.frames_per_id * scales["length_scale"]))
        feeds[name] = rng.standard_normal((1, channels, max(length, 1)), dtype=np.float32)
    return feeds


def _check_text(text: str, cap: int) -> str:
    if len(text) > cap:
        raise BadRequest(f"parameter 'text': {len(text)} characters; this voice takes at most {cap}")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\n\t\r"), None)
    if bad is not None:
        raise BadRequest(f"parameter 'text': holds the control or unassigned character U+{ord(bad):04X}")
    if not text.strip():
        raise BadRequest("parameter 'text' is empty: nothing to speak")
    return text


class SpeechTask:
    task = Task.SPEECH

    def __init__(self, name: str, root: Path, cfg: SpeechConfig, session: Session):
        self.name, self.cfg, self.session = name, cfg, session
        names = {i.name for i in session.inputs}
        wanted = _INPUTS | set(cfg.noise_inputs) | ({"sid"} if cfg.num_speakers > 1 else set())
        if names != wanted:
            raise BundleError(f"{name}: a voice takes {', '.join(sorted(wanted))} "
                              f"(this one takes {', '.join(sorted(names))})")
        self.phonemizer = espeak.espeak_version()  # fails at load, naming what to install, not at a request
        self.defaults = {**DEFAULTS, **{k: float(v) for k, v in cfg.inference.items() if k in DEFAULTS}}

    def _speaker(self, value: str | None) -> int | None:
        if self.cfg.num_speakers <= 1:
            if value not in (None, "0"):
                raise BadRequest(f"parameter 'speaker': {self.name} has one speaker")
            return None
        if value is None:
            return 0
        if value in self.cfg.speaker_id_map:
            return int(self.cfg.speaker_id_map[value])
        if re.fullmatch(r"[0-9]{1,9}", value) and int(value) < self.cfg.num_speakers:  # ASCII digits only
            return int(value)
        known = sorted(self.cfg.speaker_id_map)
        names = ", ".join(known[:10]) + ("…" if len(known) > 10 else "")
        raise BadRequest(f"parameter 'speaker': unknown speaker {value!r} ({self.cfg.num_speakers} speakers"
                         + (f": {names}" if names else "; give an index") + ")")

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        start = time.perf_counter()
        text = _check_text(params["text"], self.cfg.max_chars)
        speaker = self._speaker(params["speaker"])
        scales = {k: self.defaults[k] if params[k] is None else params[k] for k in DEFAULTS}
        sentences = espeak.phonemize(text, self.cfg.espeak_voice)
        cancel.check()
        rate = self.cfg.sample_rate
        silence = np.zeros(int(rate * params["sentence_silence"]), np.float32)
        seed = params["seed"] if params["seed"] is not None else secrets.randbits(32)  # reported: replayable
        rng = np.random.default_rng(seed)
        parts, skipped, first = [], set(), None
        for i, phonemes in enumerate(sentences):
            ids, missing = espeak.phoneme_ids(phonemes, self.cfg.phoneme_id_map)
            skipped.update(missing)
            audio = next(iter(self.session.run(voice_feeds(self.cfg, ids, scales, rng, speaker)).values()))
            audio = audio.reshape(-1).astype(np.float32)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if params["normalize"] and peak > 1e-8:
                audio = audio / peak
            audio = np.concatenate([np.clip(audio, -1.0, 1.0), silence])
            parts.append(audio)
            first = first if first is not None else time.perf_counter() - start
            yield Chunk(i, Output("audio/wav", to_wav(audio, rate), f"sentence-{i}.wav"),
                        {"sentence": i, "of": len(sentences), "duration_seconds": round(audio.size / rate, 4)})
            cancel.check()
        if not parts:
            raise BadRequest("parameter 'text': nothing speakable in it (no phonemes)")
        audio = np.concatenate(parts)
        seconds = time.perf_counter() - start
        duration = audio.size / rate
        meta = {"sample_rate": rate, "duration_seconds": round(duration, 4), "sentences": len(parts),
                "seconds": round(seconds, 4), "first_chunk_seconds": round(first or seconds, 4),
                "real_time_factor": round(seconds / max(duration, 1e-9), 5), **scales, "seed": seed,
                "phonemizer": self.phonemizer}
        if skipped:
            meta["skipped_phonemes"] = sorted(skipped)
        yield Result(self.name, self.task, outputs=(Output("audio/wav", to_wav(audio, rate), "speech.wav"),), meta=meta)


MAX_SPEECH_CHARS = 20_000   # the voice's own cap (task_config.max_chars, at most this) is checked by the task
SPEECH_PARAMS = (
    Param("text", str, required=True, max_len=MAX_SPEECH_CHARS, help="text to speak (split into sentences)"),
    Param("speaker", str, None, max_len=64, help="speaker name or index (multi-speaker voices)"),
    Param("length_scale", float, None, 0.25, 4.0, "phoneme length: < 1 faster, > 1 slower (voice default)"),
    Param("noise_scale", float, None, 0.0, 2.0, "generator noise (voice default)"),
    Param("noise_w", float, None, 0.0, 2.0, "phoneme duration noise (voice default)"),
    Param("sentence_silence", float, 0.0, 0.0, 5.0, "seconds of silence after each sentence"),
    Param("seed", int, None, 0, 2**32 - 1, "noise seed for reproducible speech"),
    Param("normalize", bool, True, help="scale each sentence to full range, as Piper does"),
)


def _speech_figures(result: Result, seconds: float) -> dict[str, float]:
    return {**audio_figures(result, seconds), "first_chunk_ms": result.meta["first_chunk_seconds"] * 1e3}


SPEC = register(TaskSpec(
    Task.SPEECH, SPEECH_PARAMS, SpeechTask, config=SpeechConfig, smoke={"text": "Hello.", "seed": 0},
    degenerate=silent,
    workload={"text": "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
                      "background. It is easy to tell the depth of a well.", "seed": 1},
    figures=_speech_figures))
