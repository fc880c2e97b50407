"""Speech synthesis end to end on a tiny Piper-shaped voice built here (tests/helpers/tiny_voice.py):
phonemes against piper-tts' own, the conversion (noise turned into inputs, the speech gate),
the task's chunks, seeds and refusals, and the voice over MQTT and the openai client."""
from __future__ import annotations

import difflib
import io
import json
import sys
import wave

import numpy as np
import openai
import pytest

from edge_aigc.tasks import espeak
from edge_aigc.errors import BackendUnavailable, BadRequest
from edge_aigc.runtime.runtime import Runtime
from edge_aigc.tasks.base import Chunk, Result
from tests.helpers.service import Listener, running_service, write_config
from tests.helpers import tiny_voice as tiny_voice

# Numbers, abbreviations, currency, dates, times, quotes and every clause punctuation Piper keeps.
SENTENCES = [
    "Hello, world. Dr. Smith paid $3.50 on 12/25/2026; wow! It is 5 p.m. Really?",
    '"Is it far?" she asked. "No," he said, "it\'s just 2.5 km away..."',
    "Mr. and Mrs. Jones live at 221B Baker St. in London.",
    "Wait... what? That costs 1,299.99 euros — or 15% off: about 1104 dollars!",
    "The meeting is at 10:30 a.m. on Jan. 3rd (Monday).",
    "NASA, the FBI and the U.S.A. were mentioned in 1969.",
    "Call me at 555-0123 tomorrow",
    "She read the book, then she read it again: twice!",
]


def piper_ids(text: str) -> list[list[int]]:
    """What piper-tts itself makes of ``text``: its phonemizer, its id function, its default map."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP, phonemes_to_ids
    from piper.phonemize_espeak import EspeakPhonemizer

    return [phonemes_to_ids(s, DEFAULT_PHONEME_ID_MAP) for s in EspeakPhonemizer().phonemize("en-us", text) if s]


def our_ids(text: str) -> list[list[int]]:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return [espeak.phoneme_ids(s, DEFAULT_PHONEME_ID_MAP)[0] for s in espeak.phonemize(text, "en-us")]


@pytest.mark.parametrize("text", SENTENCES)
def test_phoneme_ids_are_pipers(text, monkeypatch):
    monkeypatch.delenv("EDGE_AIGC_PHONEMIZER", raising=False)
    assert espeak.backend() == "piper"
    assert our_ids(text) == piper_ids(text)


def test_the_system_espeak_splits_and_punctuates_as_piper_does(monkeypatch):
    """Debian's espeak-ng 1.51 lacks Piper's terminator call and phonemizes some words apart
    from piper-tts' 1.52; the sentences and their punctuation must still be Piper's, and the
    phonemes nearly so."""
    monkeypatch.setenv("EDGE_AIGC_PHONEMIZER", "system")
    assert espeak.backend() == "system" and "system" in espeak.espeak_version()
    punct = set(".,:;?!")
    for text in SENTENCES:
        from piper.phonemize_espeak import EspeakPhonemizer

        theirs = [s for s in EspeakPhonemizer().phonemize("en-us", text) if s]
        ours = espeak.phonemize(text, "en-us")
        assert len(ours) == len(theirs), text
        for a, b in zip(ours, theirs):
            assert [c for c in a if c in punct] == [c for c in b if c in punct], text
            assert difflib.SequenceMatcher(None, a, b).ratio() > 0.9, (text, "".join(a), "".join(b))


def test_without_any_espeak_the_error_names_what_to_install(monkeypatch):
    monkeypatch.setenv("EDGE_AIGC_PHONEMIZER", "system")
    monkeypatch.setattr(espeak.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setitem(espeak._state, "lib", None)
    with pytest.raises(BackendUnavailable, match=r"edge-aigc\[speech\].*apt install espeak-ng"):
        espeak.phonemize("Hello.", "en-us")
    monkeypatch.setenv("EDGE_AIGC_PHONEMIZER", "festival")
    with pytest.raises(BackendUnavailable, match="choose piper or system"):
        espeak.backend()


def test_a_missing_piper_tts_is_named_where_it_is_asked_for(monkeypatch):
    monkeypatch.setenv("EDGE_AIGC_PHONEMIZER", "piper")
    monkeypatch.setitem(espeak._state, "piper", None)
    monkeypatch.setitem(sys.modules, "piper.phonemize_espeak", None)  # import fails, as when not installed
    assert "piper-tts is not installed" in espeak.unavailable()
    monkeypatch.delenv("EDGE_AIGC_PHONEMIZER")
    monkeypatch.delitem(sys.modules, "piper.phonemize_espeak")
    assert espeak.unavailable() is None


def test_phonemes_the_voice_lacks_are_skipped_and_named():
    ids, missing = espeak.phoneme_ids(list("ab?"), {"^": [1], "$": [2], "_": [0], "a": [5], "?": [9]})
    assert ids == [1, 0, 5, 0, 9, 0, 2] and missing == ["b"]


# -- conversion -----------------------------------------------------------------------------
def test_conversion_makes_the_noise_an_input_and_gates_on_real_sentences(voices):
    import onnx
    import tarfile

    res = voices["solo"]
    m = res.manifest
    assert m.task == "speech-synthesis" and res.recipe == "fp32"  # the profile's recipe for voices
    cfg = m.config
    assert {k: list(v) for k, v in cfg.noise_inputs.items()} == {"noise_0": [2, "phonemes"], "noise_1": [4, "frames"]}
    assert cfg.sample_rate == tiny_voice.RATE and cfg.espeak_voice == "en-us" and cfg.frames_per_id > 2
    with tarfile.open(res.bundle) as t:
        graph = onnx.load_from_string(t.extractfile("model.onnx").read())
    assert not [n for n in graph.graph.node if n.op_type.startswith("Random")]
    fid = m.fidelity
    assert fid["passed"] and set(fid["metrics"]) == {"log_mel_distance", "duration_error", "duration_ratio"}
    assert "real sentences" in fid["inputs"]
    assert voices["trio"].recipe == "fp16" and voices["trio"].manifest.config.num_speakers == 3


def test_a_voice_of_another_phoneme_type_is_refused(tmp_path):
    from converters.sources.load import load_source
    from edge_aigc.errors import SourceError

    src = tiny_voice.build(tmp_path / "v.onnx")
    meta = json.loads(src.with_name("v.onnx.json").read_text())
    src.with_name("v.onnx.json").write_text(json.dumps({**meta, "phoneme_type": "pinyin"}))
    with pytest.raises(SourceError, match="phoneme_type 'pinyin' is not supported"):
        load_source(src)


def test_the_speech_gate_grades_against_fp32():
    from converters.gate.metrics import aligned_log_mel_distance

    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000)
    assert aligned_log_mel_distance(x, x, 16000) == 0
    # the same sound a few frames late is near; another sound is far
    late = np.concatenate([np.zeros(512), x])
    assert aligned_log_mel_distance(x, late, 16000) < 0.1 < aligned_log_mel_distance(x, rng.standard_normal(8000), 16000)


# -- the task -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rt(voices):
    with Runtime([voices["solo"].bundle, voices["trio"].bundle], "x86-avx2", require_signature=False) as r:
        yield r


def pcm(wav: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


def test_each_sentence_arrives_as_a_chunk_and_the_result_is_all_of_them(rt):
    events = list(rt.stream("solo", text="Hello there. How are you? Fine, thanks.", seed=3))
    chunks, [result] = [e for e in events if isinstance(e, Chunk)], [e for e in events if isinstance(e, Result)]
    assert [c.index for c in chunks] == [0, 1, 2] and events[-1] is result
    rate, whole = pcm(result.outputs[0].data)
    assert rate == tiny_voice.RATE and result.meta["sentences"] == 3
    assert np.array_equal(whole, np.concatenate([pcm(c.output.data)[1] for c in chunks]))
    assert result.meta["duration_seconds"] == pytest.approx(whole.size / rate, abs=1e-3)
    assert 0 < result.meta["first_chunk_seconds"] <= result.meta["seconds"]


def test_a_seed_gives_the_same_speech_and_another_seed_other_speech(rt):
    one = rt.generate("solo", text="The birch canoe slid on the smooth planks.", seed=7).outputs[0].data
    assert rt.generate("solo", text="The birch canoe slid on the smooth planks.", seed=7).outputs[0].data == one
    assert rt.generate("solo", text="The birch canoe slid on the smooth planks.", seed=8).outputs[0].data != one
    unseeded = rt.generate("solo", text="The birch canoe slid on the smooth planks.")  # a seed is chosen and told
    assert rt.generate("solo", text="The birch canoe slid on the smooth planks.",
                       seed=unseeded.meta["seed"]).outputs[0].data == unseeded.outputs[0].data
    quiet = rt.generate("solo", text="The birch canoe slid on the smooth planks.", seed=8, noise_scale=0.0,
                        noise_w=0.0).outputs[0].data
    assert quiet == rt.generate("solo", text="The birch canoe slid on the smooth planks.", seed=9, noise_scale=0.0,
                                noise_w=0.0).outputs[0].data  # no noise: the seed does not matter


def test_length_scale_and_sentence_silence_lengthen_the_speech(rt):
    text = "Glue the sheet to the dark blue background. It is easy."
    base = pcm(rt.generate("solo", text=text, seed=1).outputs[0].data)[1].size
    slow = pcm(rt.generate("solo", text=text, seed=1, length_scale=2.0).outputs[0].data)[1].size
    paused = pcm(rt.generate("solo", text=text, seed=1, sentence_silence=0.25).outputs[0].data)[1].size
    assert slow > 1.5 * base
    assert paused == base + 2 * int(0.25 * tiny_voice.RATE)


def test_speakers_by_name_and_index(rt):
    a = rt.generate("trio", text="Hello there.", seed=1, speaker="speaker_1").outputs[0].data
    assert rt.generate("trio", text="Hello there.", seed=1, speaker="1").outputs[0].data == a
    assert rt.generate("trio", text="Hello there.", seed=1, speaker=2).outputs[0].data != a


@pytest.mark.parametrize("params, match", [
    ({"text": ""}, "empty"),
    ({"text": "   \n "}, "empty"),
    ({"text": "x" * 20_001}, "longer than 20000"),
    ({"text": "bell \x07 here"}, "U\\+0007"),
    ({"text": "Hi.", "speaker": "bob"}, "has one speaker"),
    ({"text": "Hi.", "length_scale": 0.0}, "out of range"),
    ({"text": "Hi.", "noise_w": 9}, "out of range"),
    ({"text": "Hi.", "sentence_silence": -1}, "out of range"),
    ({"text": "Hi.", "voice": "x"}, "unknown parameter 'voice'"),
    ({}, "'text' is required"),
])
def test_bad_requests_are_refused_clearly(rt, params, match):
    with pytest.raises(BadRequest, match=match):
        rt.generate("solo", **params)


def test_an_unknown_speaker_of_a_multi_speaker_voice_lists_the_known_ones(rt):
    with pytest.raises(BadRequest, match=r"unknown speaker 'bob' \(3 speakers: speaker_0, speaker_1, speaker_2\)"):
        rt.generate("trio", text="Hi.", speaker="bob")


def test_text_over_the_voices_own_cap_is_refused(rt):
    cap = rt.model("solo").bundle.manifest.config.max_chars
    with pytest.raises(BadRequest, match=f"at most {cap}"):
        rt.generate("solo", text="a " * cap)


# -- MQTT and HTTP --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(broker, voices, tmp_path_factory):
    d = tmp_path_factory.mktemp("speech-svc")
    cfg = write_config(d / "device.toml", broker.port, [voices["solo"].bundle, voices["trio"].bundle],
                       device_id="talker", http={"enabled": True, "listen": "127.0.0.1:0"})
    with running_service(cfg) as svc:
        yield svc


def test_over_mqtt_each_sentence_is_published_before_the_result(broker, service):
    import hashlib

    root = "edge-aigc/talker"
    listener = Listener(broker, [f"{root}/res/#", f"{root}/data/#"])
    try:
        listener.publish(f"{root}/cmd", json.dumps({"id": "say-1", "action": "generate", "model": "solo",
                                                    "params": {"text": "One. Two. Three.", "seed": 1}}).encode())
        chunks, payloads = [], {}
        while True:
            msg = listener.next(timeout=30)
            if "/data/" in msg.topic:
                payloads[msg.topic] = msg.payload
                continue
            body = json.loads(msg.payload)
            if body["event"] == "chunk":
                chunks.append(body)
            elif body["event"] == "result":
                result = body
                break
        while len(payloads) < len(chunks) + 1:  # the data topics may still be arriving
            msg = listener.next(timeout=30)
            payloads[msg.topic] = msg.payload
    finally:
        listener.close()
    assert [c["index"] for c in chunks] == [0, 1, 2] and result["task"] == "speech-synthesis"
    for c in chunks:
        ref = c["data"]
        assert ref["topic"] == f"{root}/data/say-1/chunk/{c['index']}" and ref["content_type"] == "audio/wav"
        assert hashlib.sha256(payloads[ref["topic"]]).hexdigest() == ref["sha256"]
        assert c["meta"]["of"] == 3
    [whole] = result["data"]
    assert pcm(payloads[whole["topic"]])[1].size == sum(pcm(payloads[c["data"]["topic"]])[1].size for c in chunks)


def test_the_openai_client_gets_speech_with_speed_and_voice(service):
    base = f"http://127.0.0.1:{service.http.port}/v1"
    with openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60) as c:
        normal = c.audio.speech.create(model="solo", voice="alloy", input="The juice of lemons makes fine punch.",
                                       extra_body={"seed": 2}).content
        fast = c.audio.speech.create(model="solo", voice="alloy", input="The juice of lemons makes fine punch.",
                                     speed=2.0, extra_body={"seed": 2}).content
        assert normal[:4] == b"RIFF" and pcm(fast)[1].size < pcm(normal)[1].size
        one = c.audio.speech.create(model="trio", voice="speaker_1", input="Hello there.", extra_body={"seed": 2})
        assert one.content == service.rt.generate("trio", text="Hello there.", seed=2, speaker="speaker_1").outputs[0].data
        with pytest.raises(openai.BadRequestError, match="unknown speaker 'nobody'"):
            c.audio.speech.create(model="trio", voice="nobody", input="Hello.")
        with pytest.raises(openai.BadRequestError, match="'speed' must be a number in"):
            c.audio.speech.create(model="solo", voice="alloy", input="Hello.", speed=9)
        with pytest.raises(openai.BadRequestError, match="'gain' does not apply"):
            c.audio.speech.create(model="solo", voice="alloy", input="Hello.", extra_body={"gain": 2})
