"""Text → espeak-ng phonemes → a voice's phoneme ids, as Piper does it.

Piper voices are trained on espeak-ng's IPA: one clause at a time, the clause's punctuation
kept as a symbol (a space after ``, : ;``), codepoints NFD-decomposed, sentences split where
espeak ends one; ids are BOS, PAD, each phoneme followed by PAD, EOS.

Two espeak-ng builds can do the phonemizing (``backend()``):

- ``piper``: the one inside ``piper-tts`` (the ``[speech]`` extra), through its own
  ``EspeakPhonemizer``. Identical to Piper by construction (tests/unit/tasks/test_speech.py checks).
- ``system``: the system's libespeak-ng (``apt install espeak-ng``), loaded with ctypes.
  Released espeak-ng lacks the call Piper's fork uses to learn a clause's punctuation
  (``espeak_TextToPhonemesWithTerminator``), so it is read off the text each clause consumed;
  and Debian's 1.51 phonemizes a few words differently from piper-tts' 1.52 (docs/speech.md
  lists what was measured). Close, not identical: the fallback for images that take system
  packages only.

espeak-ng is GPL-3.0 and this project Apache-2.0, so neither is a required dependency: both
are the user's choice to install, and without either a speech bundle fails to load with an
error naming both.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import threading
import unicodedata
from typing import Mapping, Sequence

from ..errors import BadRequest, BackendUnavailable

__all__ = ["phonemize", "phoneme_ids", "backend", "unavailable", "espeak_version", "BACKENDS", "BOS", "EOS", "PAD"]

BOS, EOS, PAD = "^", "$", "_"
_AUDIO_OUTPUT_RETRIEVAL, _DONT_EXIT, _CHARS_UTF8, _PHONEMES_IPA = 1, 0x8000, 1, 0x02
# A clause's terminator as espeak classifies it: the symbol Piper keeps, and whether it ends a sentence.
_TERMINATORS = {".": True, "?": True, "!": True, ",": False, ":": False, ";": False}
_LOOKAHEAD = re.compile(r"(?<=\s)\S$")
_DASHES = ("—", "–")
_CLOSERS = "\"')]}»”’"       # may follow a clause's punctuation: 'Really?"'
_FLAGS = re.compile(r"\([^)]+\)")
_lock = threading.Lock()
_state: dict = {"lib": None, "voice": None, "piper": None}
BACKENDS = ("piper", "system")
_INSTALL = "pip install 'edge-aigc[speech]' (piper-tts, GPL-3.0) or apt install espeak-ng"


def _library() -> ctypes.CDLL:
    if _state["lib"] is None:
        name = ctypes.util.find_library("espeak-ng")
        if name is None:
            raise BackendUnavailable(f"speech synthesis needs espeak-ng phonemes, and neither piper-tts nor "
                                     f"the espeak-ng library is installed: {_INSTALL}")
        lib = ctypes.CDLL(name)
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_Info.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, None, _DONT_EXIT) <= 0:
            raise BackendUnavailable("espeak-ng is installed but failed to initialise (is espeak-ng-data there?)")
        _state["lib"] = lib
    return _state["lib"]


def espeak_version() -> str:
    """The backend and its espeak-ng version, recorded with what it phonemized."""
    with _lock:
        if backend() == "piper":
            from importlib.metadata import version

            return f"piper-tts {version('piper-tts')}"
        return f"espeak-ng {_library().espeak_Info(None).decode()} (system)"


def _voice(lib: ctypes.CDLL, voice: str) -> None:
    if _state["voice"] != voice:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise BackendUnavailable(f"espeak-ng has no voice {voice!r} (is espeak-ng-data complete?)")
        _state["voice"] = voice


def _terminator(consumed: str, last: bool) -> str:
    """The clause punctuation ending ``consumed`` ("" when the clause ended without one).

    espeak reads one character past a clause's end (the next word's first, after the
    whitespace), so that look-ahead is dropped first; closing quotes stay with the clause.
    """
    if not last:
        consumed = _LOOKAHEAD.sub("", consumed)
    tail = consumed.rstrip().rstrip(_CLOSERS)
    if tail.endswith(("...", "…")):
        return ""  # espeak gives an ellipsis no clause type Piper keeps
    if tail.endswith(_DASHES):
        return ";"  # a spaced dash ends a clause as a semicolon does
    return tail[-1] if tail and tail[-1] in _TERMINATORS else ""


def _system_clauses(text: str, voice: str) -> list[tuple[str, str]]:
    """(phonemes, terminator) per clause, from the system's libespeak-ng."""
    raw = text.encode("utf-8")
    buf = ctypes.create_string_buffer(raw)
    start = ctypes.addressof(buf)
    ptr = ctypes.c_void_p(start)
    clauses = []
    lib = _library()
    _voice(lib, voice)
    while ptr.value:
        before = ptr.value - start
        phonemes = (lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA) or b"").decode()
        after = ptr.value - start if ptr.value else len(raw)
        end = _terminator(raw[before:after].decode("utf-8", "replace"), not ptr.value)
        clauses.append((phonemes, end))
    return clauses


def backend() -> str:
    """Which espeak-ng phonemizes: ``piper`` (piper-tts' build, identical to Piper) when
    installed, else ``system`` (the system's libespeak-ng); ``$EDGE_AIGC_PHONEMIZER`` forces one."""
    forced = os.environ.get("EDGE_AIGC_PHONEMIZER", "")
    if forced not in ("", *BACKENDS):
        raise BackendUnavailable(f"EDGE_AIGC_PHONEMIZER={forced!r}: choose {' or '.join(BACKENDS)}")
    if forced == "system" or (not forced and importlib.util.find_spec("piper") is None):
        return "system"
    return "piper"


def unavailable() -> str | None:
    """Why no espeak-ng can phonemize here (what to install), or None when one can."""
    try:
        with _lock:
            _library() if backend() == "system" else _piper()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def _piper():
    if _state["piper"] is None:
        try:
            from piper.phonemize_espeak import EspeakPhonemizer
        except ImportError:
            raise BackendUnavailable(f"EDGE_AIGC_PHONEMIZER=piper, but piper-tts is not installed: {_INSTALL}") from None
        _state["piper"] = EspeakPhonemizer()
    return _state["piper"]


def phonemize(text: str, voice: str) -> list[list[str]]:
    """Sentences of phonemes (codepoints, punctuation kept) of ``text`` in espeak ``voice``,
    as Piper's ``EspeakPhonemizer.phonemize`` returns them."""
    with _lock:
        if backend() == "piper":
            return [s for s in _piper().phonemize(voice, text) if s]
        return _system_sentences(text, voice)


def _system_sentences(text: str, voice: str) -> list[list[str]]:
    sentences: list[list[str]] = []
    current: list[str] = []
    for phonemes, end in _system_clauses(text, voice):
        clause = _FLAGS.sub("", phonemes) + end  # Piper drops espeak's (fr)…(en) language marks
        if end in (",", ":", ";"):
            clause += " "
        current.extend(unicodedata.normalize("NFD", clause))
        if _TERMINATORS.get(end, False):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return [s for s in sentences if s]


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> tuple[list[int], list[str]]:
    """Piper's ids: BOS, PAD, then each phoneme followed by PAD, then EOS; and the phonemes
    the voice has no id for (skipped, as Piper skips them)."""
    for symbol in (BOS, EOS, PAD):
        if symbol not in id_map:
            raise BadRequest(f"the voice's phoneme map has no {symbol!r}")
    ids, missing = [*id_map[BOS], *id_map[PAD]], []
    for p in phonemes:
        if p in id_map:
            ids.extend(id_map[p])
            ids.extend(id_map[PAD])
        else:
            missing.append(p)
    ids.extend(id_map[EOS])
    return ids, missing
