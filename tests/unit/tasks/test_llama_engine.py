"""The llama.cpp engine: a ``gguf`` bundle (a GGUF file the test writes) served by the text task
through llama.cpp's decode, with the kit's own tokenizer, sampler, stop strings, streaming and
chat sessions. Greedy output equals llama.cpp's own greedy completion of the same file."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edge_aigc import Runtime, pack_bundle
from edge_aigc.errors import BackendUnavailable, BadRequest, BundleError
from edge_aigc.remote.client import DeviceClient
from edge_aigc.tasks.base import Token
from tests.helpers.service import running_service, write_config
from tests.helpers.tiny_gguf import CHAT_TEMPLATE, llama_cpp_greedy, write_tiny_gguf
from tests.helpers.tiny_lm import save_tiny_lm


PROMPT = "Once upon a time"


def gguf_bundle(out, gguf, name="tiny-gguf", model_bytes=None):
    """A gguf bundle of ``gguf``: the file, the kit's tokenizer and task_config read from it."""
    from converters.sources.load import load_source

    source = load_source(str(gguf))
    pack_bundle(out, {"name": name, "version": "1.0.0", "task": "text-generation", "format": "gguf",
                      "profile": "x86-avx2", "recipe": "fp32",
                      "task_config": {**source.task_config, "chat_template": CHAT_TEMPLATE}, "io": {}},
                {"model.gguf": model_bytes if model_bytes is not None else gguf.read_bytes(),
                 "tokenizer.json": source.tokenizer.to_str().encode()})
    return out


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """The GGUF source's dequantized copy goes to the test's own cache, not the user's."""
    monkeypatch.setenv("EDGE_AIGC_CACHE", str(tmp_path_factory.getbasetemp() / "gguf-cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama-engine")
    hf = save_tiny_lm(d / "hf", arch="llama", hidden=64, steps=120, seed=3)
    gguf = write_tiny_gguf(hf, d / "Tiny.F32.gguf")
    return gguf, gguf_bundle(d / "tiny-gguf.eaigc", gguf)


def test_greedy_equals_llama_cpps_own_greedy_completion(tiny):
    gguf, bundle = tiny
    expected = llama_cpp_greedy(gguf, PROMPT, 24)
    with Runtime([bundle], "x86-avx2") as rt:
        events = list(rt.stream("tiny-gguf", prompt=PROMPT, max_new_tokens=24, temperature=0.0))
        ours = events[-1]
        assert rt.info("tiny-gguf")["providers"] == ["llama.cpp CPU"] and rt.info("tiny-gguf")["format"] == "gguf"
    assert ours.text == expected and len(expected) > 10
    assert "".join(e.text for e in events if isinstance(e, Token)) == ours.text  # streamed pieces add up


def test_sampling_is_the_kits_own_seeded_stop_strings_and_limits_hold(tiny):
    _, bundle = tiny
    with Runtime([bundle], "x86-avx2") as rt:
        a = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=20, temperature=1.2, top_k=20, seed=7)
        b = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=20, temperature=1.2, top_k=20, seed=7)
        c = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=20, temperature=1.2, top_k=20, seed=8)
        greedy = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=24, temperature=0.0).text
        stop = greedy[greedy.index(" ", 3):greedy.index(" ", 3) + 4]
        stopped = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=24, temperature=0.0, stop=[stop])
        short = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=3, temperature=0.0)
    assert a.text == b.text and a.text != c.text
    assert stopped.text == greedy[:greedy.index(stop)] and stop not in stopped.text
    assert short.meta["generated_tokens"] == 3


def test_a_chat_session_keeps_its_cache_between_turns_and_matches_a_fresh_run(tiny):
    _, bundle = tiny
    turns = [{"role": "user", "content": "Once upon a time"}]
    with Runtime([bundle], "x86-avx2") as rt:
        first = rt.generate("tiny-gguf", messages=turns, session="s1", owner="me", max_new_tokens=8, temperature=0.0)
        turns += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "and then"}]
        second = rt.generate("tiny-gguf", messages=turns, session="s1", owner="me", max_new_tokens=8, temperature=0.0)
        fresh = rt.generate("tiny-gguf", messages=turns, max_new_tokens=8, temperature=0.0)
    assert second.meta["session"]["reused_tokens"] > 0, second.meta["session"]
    assert second.text == fresh.text


def test_a_context_grows_with_its_conversation_and_keeps_what_it_held(tiny, monkeypatch):
    """Contexts start small (llama.cpp allocates and clears all of one's KV cache) and are
    replaced by longer ones, the sequence copied over, as a conversation outgrows them."""
    from edge_aigc.tasks.text import llama_loop

    gguf, bundle = tiny
    long_prompt = " ".join([PROMPT] * 12)
    expected = llama_cpp_greedy(gguf, long_prompt, 40)
    monkeypatch.setattr(llama_loop, "MIN_CONTEXT", 32)
    with Runtime([bundle], "x86-avx2") as rt:
        loop = rt.model("tiny-gguf").task.loop
        state = loop.start(1)
        assert state.size == 32 and loop.state_bytes(state) == 32 * loop.token_bytes
        del state
        ours = rt.generate("tiny-gguf", prompt=long_prompt, max_new_tokens=40, temperature=0.0, speculation="off")
        turn = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=8, temperature=0.0, session="g", owner="me")
        grown = rt.generate("tiny-gguf", prompt=PROMPT + turn.text + long_prompt, max_new_tokens=40,
                            temperature=0.0, session="g", owner="me")
        fresh = rt.generate("tiny-gguf", prompt=PROMPT + turn.text + long_prompt, max_new_tokens=40,
                            temperature=0.0, owner="other")
    assert ours.text == expected and ours.meta["prompt_tokens"] > 64
    assert grown.meta["session"]["reused_tokens"] > 0 and grown.meta["token_ids"] == fresh.meta["token_ids"]


def test_beam_search_is_refused_naming_the_engine(tiny):
    _, bundle = tiny
    with Runtime([bundle], "x86-avx2") as rt, pytest.raises(BadRequest, match="llama.cpp engine"):
        rt.generate("tiny-gguf", prompt=PROMPT, num_beams=2, max_new_tokens=4)


def test_a_gguf_bundle_whose_file_is_not_a_model_is_a_clear_bundle_error(tmp_path, tiny):
    gguf, _ = tiny
    bad = gguf_bundle(tmp_path / "bad.eaigc", gguf, name="bad-gguf", model_bytes=b"GGUF" + bytes(64))
    with pytest.raises(BundleError, match="llama.cpp cannot load model.gguf") as info:
        Runtime([bad], "x86-avx2")
    assert str(tmp_path) not in str(info.value)


def test_a_truncated_gguf_file_is_a_clear_bundle_error(tmp_path, tiny):
    gguf, _ = tiny
    data = gguf.read_bytes()
    cut = gguf_bundle(tmp_path / "cut.eaigc", gguf, name="cut-gguf", model_bytes=data[:len(data) // 2])
    with pytest.raises(BundleError, match="llama.cpp cannot load model.gguf") as info:
        Runtime([cut], "x86-avx2")
    assert str(tmp_path) not in str(info.value)


def test_without_the_llama_extra_a_gguf_bundle_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what an install without [llama] imports
    with pytest.raises(BackendUnavailable, match=r"pip install 'edge-aigc\[llama\]'"):
        Runtime([tiny[1]], "x86-avx2")


def test_served_over_mqtt_the_same_greedy_answer(broker, tiny, tmp_path):
    _, bundle = tiny
    with Runtime([bundle], "x86-avx2") as rt:
        direct = rt.generate("tiny-gguf", prompt=PROMPT, max_new_tokens=12, temperature=0.0).text
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundle], device_id="gguf-dev")
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        reply = client.request("gguf-dev", "generate", "tiny-gguf", {"prompt": PROMPT, "max_new_tokens": 12,
                                                                    "temperature": 0.0}, timeout=60)
        assert reply.ok and reply.final["text"] == direct
        beams = client.request("gguf-dev", "generate", "tiny-gguf", {"prompt": PROMPT, "num_beams": 2}, timeout=60)
        assert beams.final["code"] == "bad_request" and "llama.cpp" in beams.final["message"]
    assert json.dumps(reply.final["meta"])  # its meta is plain JSON
    assert np.isfinite(reply.final["meta"].get("tokens_per_second", 0.0))
