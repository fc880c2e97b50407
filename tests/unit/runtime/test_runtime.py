"""On-device runtime: real bundles through Runtime, the tasks and `edge-aigc run`."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import wave

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from edge_aigc import CancelToken, Runtime, Token
from edge_aigc.errors import BadRequest, Cancelled, Timeout, UnknownModel
from edge_aigc.tasks.text.detok import TextStreamer
from tests.helpers.tiny_lm import train_tokenizer



@pytest.fixture(scope="module")
def rt(bundles):
    with Runtime([bundles["text"], bundles["image"], bundles["audio"]], "x86-avx2") as runtime:
        yield runtime


def greedy(rt, prompt, n=20, **extra):
    return rt.generate("tiny-lm", prompt=prompt, max_new_tokens=n, temperature=0.0, **extra)


def test_runtime_loads_each_bundle_once_with_its_task(rt):
    assert rt.loaded() == ["tiny-dcgan", "tiny-lm", "tiny-synth"]
    assert rt.info("tiny-lm")["providers"] == ["CPUExecutionProvider"]
    assert rt.model("tiny-lm").session is rt.model("tiny-lm").session


def test_kv_cache_greedy_equals_recomputing_the_whole_prefix(rt):
    result = greedy(rt, "The quick brown fox", n=24)
    model = rt.model("tiny-lm")
    loop = model.task.loop
    ids = model.task.encode("The quick brown fox")
    for _ in range(24):  # a fresh, empty cache and the whole sequence every step
        logits = loop.step(loop.start(1), np.array([ids]))
        ids.append(int(logits[0, -1].argmax()))
    assert result.meta["token_ids"] == ids[-24:]
    assert result.meta["finish_reason"] == "length"


def test_seeded_sampling_is_reproducible_and_the_seed_matters(rt):
    a = rt.generate("tiny-lm", prompt="Once upon a time", max_new_tokens=30, temperature=1.2, seed=42)
    b = rt.generate("tiny-lm", prompt="Once upon a time", max_new_tokens=30, temperature=1.2, seed=42)
    c = rt.generate("tiny-lm", prompt="Once upon a time", max_new_tokens=30, temperature=1.2, seed=43)
    assert a.meta["token_ids"] == b.meta["token_ids"] and a.text == b.text
    assert a.meta["token_ids"] != c.meta["token_ids"]


def test_beam_search_with_one_beam_equals_greedy(rt):
    task = rt.model("tiny-lm").task
    ids = task.encode("Please remember to")
    *_, best = task.beam_search(ids, num_beams=1, budget=20)
    assert best == greedy(rt, "Please remember to").meta["token_ids"]


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(rt):
    beam = rt.generate("tiny-lm", prompt="It was the best", max_new_tokens=12, num_beams=4)
    assert beam.meta["num_beams"] == 4 and beam.text
    events = list(rt.stream("tiny-lm", prompt="It was the best", max_new_tokens=12, num_beams=4))
    assert sum(e.kind == "progress" for e in events) >= 1 and events[-1].kind == "result"


def test_stop_string_cuts_the_output(rt):
    full = greedy(rt, "The quick brown fox", n=30).text
    stop = full[8:11]
    assert stop and stop in full
    cut = greedy(rt, "The quick brown fox", n=30, stop=[stop])
    assert cut.text == full[: full.index(stop)]
    assert cut.meta["finish_reason"] == "stop"


def test_streamed_tokens_add_up_to_the_text_and_never_split_a_character(rt):
    events = list(rt.stream("tiny-lm", prompt="今天天气", max_new_tokens=30, temperature=0.0))
    tokens = [e for e in events if isinstance(e, Token)]
    result = events[-1]
    assert "".join(t.text for t in tokens) == result.text
    assert all("\ufffd" not in t.text for t in tokens)


def test_streamer_holds_back_partial_utf8_until_the_character_is_complete():
    tok = train_tokenizer()
    text = "今天天气很好，我们去公园散步吧。"
    ids = tok.encode(text).ids
    assert len(ids) > len(text) / 2, "multi-byte characters span several tokens here"
    streamer = TextStreamer(tok)
    deltas = [streamer.push(i) for i in ids]
    assert "".join(deltas) + streamer.flush() == text
    assert all("\ufffd" not in d for d in deltas)


def test_cancellation_stops_within_one_step(rt):
    cancel = CancelToken()
    got = []
    with pytest.raises(Cancelled):
        for event in rt.stream("tiny-lm", cancel, prompt="The", max_new_tokens=200, temperature=0.0):
            got.append(event)
            if isinstance(event, Token):
                cancel.cancel()
    assert sum(isinstance(e, Token) for e in got) == 1


def test_expired_deadline_is_a_timeout(rt):
    with pytest.raises(Timeout):
        rt.generate("tiny-lm", CancelToken(timeout=1e-9), prompt="The", max_new_tokens=50)


@pytest.mark.parametrize("model,params,message", [
    ("tiny-lm", {"prompt": "x", "temperature": "hot"}, "'temperature': expected float"),
    ("tiny-lm", {"prompt": "x", "max_new_tokens": -5}, "'max_new_tokens': -5 is out of range"),
    ("tiny-lm", {"prompt": "x", "max_new_tokens": 10**9}, "out of range"),
    ("tiny-lm", {"prompt": "x", "top_p": 0.0}, "'top_p'"),
    ("tiny-lm", {"prompt": "x", "num_beams": True}, "'num_beams': expected int"),
    ("tiny-lm", {"prompt": "x", "stop": ["a"] * 9}, "'stop'"),
    ("tiny-lm", {"prompt": "x", "colour": "red"}, "unknown parameter 'colour'"),
    ("tiny-lm", {}, "'prompt' is required"),
    ("tiny-lm", {"prompt": "word " * 400}, "the model's context is 256"),
    ("tiny-dcgan", {"label": "zebra"}, "'zebra' is not a class"),
    ("tiny-dcgan", {"count": 0}, "'count': 0 is out of range"),
    ("tiny-synth", {"notes": "H9:1"}, "not NOTE:SECONDS"),
    ("tiny-synth", {"notes": "C4:100"}, "duration must be between"),
])
def test_invalid_parameters_are_refused_naming_the_parameter(rt, model, params, message):
    with pytest.raises(BadRequest, match=message):
        rt.generate(model, **params)


def test_unknown_model_is_refused(rt):
    with pytest.raises(UnknownModel, match="unknown model 'nope'"):
        rt.generate("nope", prompt="x")


def test_image_png_decodes_with_the_declared_size(rt):
    one = rt.generate("tiny-dcgan", label="c", seed=1, scale=2)
    img = Image.open(io.BytesIO(one.outputs[0].data))
    assert img.format == "PNG" and img.size == (56, 56) and img.mode == "L"
    assert one.meta["labels"] == ["c"]
    many = rt.generate("tiny-dcgan", count=10, seed=1, grid=False)
    assert len(many.outputs) == 10
    assert {Image.open(io.BytesIO(o.data)).size for o in many.outputs} == {(28, 28)}
    sheet = Image.open(io.BytesIO(rt.generate("tiny-dcgan", count=10, seed=1).outputs[0].data))
    assert sheet.size == (4 * 30 + 2, 3 * 30 + 2)  # 4x3 grid with 2 px padding


def test_image_seed_reproduces_the_image(rt):
    a = rt.generate("tiny-dcgan", seed=5, label="a").outputs[0].data
    assert a == rt.generate("tiny-dcgan", seed=5, label="a").outputs[0].data
    assert a != rt.generate("tiny-dcgan", seed=6, label="a").outputs[0].data


def test_audio_wav_decodes_at_the_declared_rate_with_the_requested_pitch(rt):
    result = rt.generate("tiny-synth", notes="A4:0.5 R:0.25 E5:0.25")
    with wave.open(io.BytesIO(result.outputs[0].data)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    assert len(pcm) == 8000  # 1.0 s of notes
    spectrum = np.abs(np.fft.rfft(pcm[:4000] * np.hanning(4000)))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) <= 2
    assert np.abs(pcm[4200:5800]).max() == 0, "the rest is silent"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edge_aigc", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_run_cli_streams_text_and_writes_png_and_wav(bundles, tmp_path):
    out = cli("run", bundles["text"], "--prompt", "The quick", "--max-new-tokens", "8", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert re.search(r"generated_tokens=[1-8] finish_reason=(length|eos)", out.stderr), out.stderr
    assert out.stdout.strip()
    out = cli("run", bundles["image"], "--label", "b", "--count", "4", "-o", tmp_path / "g.png")
    assert out.returncode == 0 and Image.open(tmp_path / "g.png").size == (62, 62)
    out = cli("run", bundles["audio"], "--notes", "C4:0.25", cwd=tmp_path)
    assert out.returncode == 0 and wave.open(str(tmp_path / "tiny-synth.wav")).getnframes() == 2000


def test_run_cli_refuses_a_parameter_of_another_task(bundles):
    out = cli("run", bundles["text"], "--prompt", "x", "--notes", "C4:1")
    assert out.returncode == 7 and "--notes does not apply to text-generation" in out.stderr


def test_run_cli_play_says_clearly_when_audio_output_is_unavailable(bundles, tmp_path):
    out = cli("run", bundles["audio"], "--notes", "C4:0.1", "--play", cwd=tmp_path)
    if out.returncode == 0:
        pytest.skip("this machine has sounddevice and an output device")
    assert out.returncode == 8 and ("audio extra" in out.stderr or "no usable audio output" in out.stderr)
    assert (tmp_path / "tiny-synth.wav").is_file(), "the file is written before playback"


def test_missing_gpu_providers_fall_back_to_cpu_with_a_warning(bundles, tmp_path, caplog):
    # The Jetson profile asks for TensorRT, then CUDA; this machine has neither.
    with caplog.at_level("WARNING"):
        with Runtime([bundles["image"]], "jetson-orin-nano", state_dir=tmp_path) as rt:
            assert rt.info("tiny-dcgan")["providers"] == ["CPUExecutionProvider"]
            assert rt.generate("tiny-dcgan", seed=1).outputs[0].data.startswith(b"\x89PNG")
    warned = " ".join(r.getMessage() for r in caplog.records)
    missing = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
               if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("this onnxruntime has GPU providers; nothing falls back")
    for provider in missing:
        assert f"{provider} is not available" in warned
