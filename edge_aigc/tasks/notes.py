"""Note sequences: the conditioning of audio generators.

A request says ``"C4:0.5 E4:0.5 R:0.25 G4:1.0"``: note name (or ``R`` for a rest) and
duration in seconds. Models take it as two frame-rate signals, ``f0`` (Hz, 0 when
silent) and ``loudness`` (amplitude envelope in [0, 1]). The converters' calibration
sampler and the runtime both use these functions, so the model sees the same thing
at conversion and at run time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import BadRequest

__all__ = ["Note", "parse_notes", "note_frames", "midi_to_hz", "random_notes", "MAX_NOTES"]

MAX_NOTES = 256
_NOTE_RE = re.compile(r"^(?:(?P<rest>[Rr])|(?P<name>[A-Ga-g])(?P<acc>#|b)?(?P<oct>-?\d))"
                      r":(?P<dur>\d+(?:\.\d+)?)$")
_SEMITONES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
ATTACK_S, RELEASE_S = 0.01, 0.03


@dataclass(frozen=True)
class Note:
    midi: int | None  # None is a rest
    seconds: float


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def parse_notes(text: str, max_seconds: float = 30.0) -> list[Note]:
    """Parse ``"C4:0.5 E4:0.5"``; raises BadRequest naming the bad token."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("notes: expected a string like 'C4:0.5 E4:0.5 G4:1.0'")
    notes: list[Note] = []
    for token in text.split():
        m = _NOTE_RE.match(token)
        if not m:
            raise BadRequest(f"notes: {token!r} is not NOTE:SECONDS (e.g. C4:0.5, F#3:0.25, R:0.5)")
        seconds = float(m["dur"])
        if not 0.01 <= seconds <= max_seconds:
            raise BadRequest(f"notes: {token!r} duration must be between 0.01 and {max_seconds} s")
        midi = None
        if not m["rest"]:
            midi = 12 * (int(m["oct"]) + 1) + _SEMITONES[m["name"].lower()] \
                + {"#": 1, "b": -1, None: 0}[m["acc"]]
            if not 12 <= midi <= 108:
                raise BadRequest(f"notes: {token!r} is outside C0..C8")
        notes.append(Note(midi, seconds))
    if len(notes) > MAX_NOTES:
        raise BadRequest(f"notes: at most {MAX_NOTES} notes per request, got {len(notes)}")
    if sum(n.seconds for n in notes) > max_seconds:
        raise BadRequest(f"notes: total duration must be at most {max_seconds} s")
    return notes


def note_frames(notes: list[Note], frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``f0`` (Hz; 0 for rests) and ``loudness`` (attack/release envelope), float32."""
    f0_parts, loud_parts = [], []
    for note in notes:
        n = max(1, round(note.seconds * frame_rate))
        hz = midi_to_hz(note.midi) if note.midi is not None else 0.0
        t = np.arange(n) / frame_rate
        env = np.minimum(1.0, np.minimum(t / ATTACK_S, (note.seconds - t) / RELEASE_S).clip(0, None))
        f0_parts.append(np.full(n, hz, np.float32))
        loud_parts.append((env if note.midi is not None else np.zeros(n)).astype(np.float32))
    return np.concatenate(f0_parts), np.concatenate(loud_parts)


def random_notes(rng: np.random.Generator, seconds: float = 1.5, low: int = 48, high: int = 84,
                 rest_probability: float = 0.1) -> list[Note]:
    """A seeded melody, for calibration and validation sets."""
    notes, total = [], 0.0
    while total < seconds:
        dur = float(rng.choice([0.125, 0.25, 0.375, 0.5]))
        rest = rng.random() < rest_probability
        notes.append(Note(None if rest else int(rng.integers(low, high + 1)), dur))
        total += dur
    return notes
