"""What ``describe`` lists (each loaded voice, as Home Assistant shows it) and which voice a
``synthesize`` request means: by name, else by language, else the configured default."""
from __future__ import annotations

from typing import Any

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.tts import SynthesizeVoice

from ..._version import __version__
from ...contract import Task
from ...errors import BadRequest, UnknownModel
from ...runtime.runtime import Runtime

__all__ = ["describe", "pick_voice", "check_voice", "voice_params"]

_KIT = Attribution(name="edge-aigc", url="")  # the project publishes no address yet
_PIPER = Attribution(name="rhasspy/piper", url="https://github.com/rhasspy/piper")


def _voices(rt: Runtime) -> list[str]:
    return [name for name in rt.loaded() if rt.info(name)["task"] == Task.SPEECH]


def language(espeak_voice: str) -> str:
    """Piper's spelling of a voice's language: espeak-ng's ``en-us`` is ``en_US``."""
    lang, _, region = espeak_voice.partition("-")
    return f"{lang}_{region.upper()}" if region and len(region) == 2 else espeak_voice


def describe(rt: Runtime) -> Info:
    """The ``info`` answer: one TTS program, the kit, with each loaded voice."""
    voices = []
    for name in _voices(rt):
        manifest = rt.model(name).bundle.manifest
        cfg = manifest.config
        speakers = None
        if cfg.num_speakers > 1:  # by id, then the names the voice gives its speakers
            named = sorted(cfg.speaker_id_map, key=cfg.speaker_id_map.get) or [str(i) for i in range(cfg.num_speakers)]
            speakers = [TtsVoiceSpeaker(name=s) for s in named]
        piper = manifest.source.get("piper_voice")
        voices.append(TtsVoice(name=name, description=f"{name} {manifest.version} ({manifest.recipe})",
                               attribution=_PIPER if piper else _KIT, installed=True, version=manifest.version,
                               languages=[language(cfg.espeak_voice)], speakers=speakers))
    program = TtsProgram(name="edge-aigc", description="edge-aigc voices", attribution=_KIT, installed=True,
                         version=__version__, voices=voices, supports_synthesize_streaming=True)
    return Info(tts=[program])


def pick_voice(rt: Runtime, voice: SynthesizeVoice | None, default: str) -> str:
    """The model a request's voice means; a BadRequest or UnknownModel names what is wrong."""
    voices = _voices(rt)
    name = voice.name if voice is not None else None
    if name:
        if name in voices:
            return name
        if name in rt.loaded():
            raise BadRequest(f"{name!r} is a {rt.info(name)['task']} model, not a voice")
        raise UnknownModel(f"unknown voice {name!r} (voices: {', '.join(voices) or 'none'})")
    if not voices:
        raise UnknownModel("no voice is loaded on this device")
    wanted = (voice.language or "").replace("-", "_").lower() if voice is not None else ""
    if wanted:
        for candidate in voices:
            lang = language(rt.model(candidate).bundle.manifest.config.espeak_voice).lower()
            if lang == wanted or lang.split("_")[0] == wanted:
                return candidate
    return default if default in voices else voices[0]


def check_voice(data: dict[str, Any]) -> None:
    """A request's ``voice``: absent, or an object of strings (the wyoming package would take
    anything else for no voice at all)."""
    voice = data.get("voice")
    if voice is None:
        return
    if not isinstance(voice, dict) or set(voice) - {"name", "language", "speaker"}:
        raise BadRequest("'voice' must be an object with 'name', 'language' or 'speaker'")
    for key, value in voice.items():
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"voice.{key} must be a string")


def voice_params(text: str, voice: SynthesizeVoice | None) -> dict[str, Any]:
    """A speech request's parameters: the text, and the speaker when one is named."""
    params: dict[str, Any] = {"text": text}
    if voice is not None and voice.speaker:
        params["speaker"] = voice.speaker
    return params
