"""Audio generation: a note sequence → f0/loudness frames → the model → 16-bit PCM WAV."""
from __future__ import annotations

import io
import time
import wave
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..backends.base import Session
from ..contract import Task
from ..errors import BundleError
from ..bundle.task_config import AudioConfig
from .base import CancelToken, Event, Output, Result, first_output
from .params import Param
from .spec import TaskSpec, register
from .notes import note_frames, parse_notes

__all__ = ["AudioTask", "to_wav", "silent", "audio_figures"]


def to_wav(audio: np.ndarray, sample_rate: int, gain: float = 1.0) -> bytes:
    pcm = np.rint(np.clip(audio.reshape(-1) * gain, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class AudioTask:
    task = Task.AUDIO

    def __init__(self, name: str, root: Path, cfg: AudioConfig, session: Session):
        self.name, self.session = name, session
        names = {i.name for i in session.inputs}
        if not {"f0", "loudness"} <= names:
            raise BundleError(f"{name}: an audio generator takes 'f0' and 'loudness' frame inputs "
                              f"(this one takes {', '.join(sorted(names))})")
        self.sample_rate, self.hop, self.max_seconds = cfg.sample_rate, cfg.hop_length, float(cfg.max_seconds)

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        start = time.perf_counter()
        notes = parse_notes(params["notes"], self.max_seconds)
        f0, loudness = note_frames(notes, self.sample_rate / self.hop)
        cancel.check()
        audio = next(iter(self.session.run({"f0": f0[None], "loudness": loudness[None]}).values()))
        seconds = time.perf_counter() - start
        duration = audio.size / self.sample_rate
        data = to_wav(audio, self.sample_rate, params["gain"])
        meta = {"sample_rate": self.sample_rate, "duration_seconds": round(duration, 4),
                "notes": len(notes), "seconds": round(seconds, 4),
                "real_time_factor": round(seconds / max(duration, 1e-9), 5)}
        yield Result(self.name, self.task, outputs=(Output("audio/wav", data, "audio.wav"),), meta=meta)


AUDIO_PARAMS = (
    Param("notes", str, required=True, max_len=4096,
          help="note sequence, e.g. 'C4:0.5 E4:0.5 G4:1.0' (R:0.5 is a rest)"),
    Param("gain", float, 1.0, 0.0, 4.0, "output gain before 16-bit conversion"),
)


def silent(result: Result) -> str | None:
    """Why a WAV result is not real audio: none, or silence."""
    data = first_output(result)
    if data is None:
        return "produced no output"
    with wave.open(io.BytesIO(data)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return None if samples.size and np.abs(samples).max() > 0 else "produced silent audio"


def audio_figures(result: Result, seconds: float) -> dict[str, float]:
    return {"real_time_factor": seconds / result.meta["duration_seconds"],
            "audio_seconds": result.meta["duration_seconds"]}


SPEC = register(TaskSpec(
    Task.AUDIO, AUDIO_PARAMS, AudioTask, config=AudioConfig, smoke={"notes": "C4:0.1"}, degenerate=silent,
    workload={"notes": "C4:0.5 E4:0.5 G4:0.5 C5:1.0 R:0.25 G4:0.5 C5:1.5"}, figures=audio_figures))
