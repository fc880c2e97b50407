"""Chat sessions: a turn reuses the KV cache of the turns before it, within bounds, per client."""
from __future__ import annotations

import json

import pytest

from converters import ConvertOptions, convert
from edge_aigc import Runtime
from edge_aigc.errors import BadRequest
from edge_aigc.device.profiles import get_profile
from edge_aigc.tasks.text.sessions import Session, SessionCache, SessionLimits
from tests.helpers.tiny_lm import save_tiny_lm

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
FIRST = [{"role": "user", "content": "Once upon a time"}]
ASK = {"max_new_tokens": 10, "temperature": 0}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One tiny chat model as the fused graph (cache shared in place) and as the dynamo
    export (cache passed step to step): both cut a cache back their own way."""
    d = tmp_path_factory.mktemp("sessions")
    hf = save_tiny_lm(d / "chatty", arch="llama", hidden=64, steps=80, seed=5)
    (hf / "chat_template.jinja").write_text(TEMPLATE)
    (hf / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}))
    out = {}
    for export in ("fused", "dynamo"):
        out[export] = d / f"{export}.eaigc"
        convert(str(hf), [get_profile("x86-avx2")], out[export],
                ConvertOptions(recipe="fp32", lm_export=export, name=f"chat-{export}"))
    return out


@pytest.fixture
def rt(bundles):
    with Runtime(list(bundles.values()), profile="x86-avx2",
                 session_limits=SessionLimits(max_sessions=2)) as runtime:
        yield runtime


def second_turn(first_text: str) -> list[dict[str, str]]:
    return FIRST + [{"role": "assistant", "content": first_text}, {"role": "user", "content": "And then?"}]


@pytest.mark.parametrize("export", ["fused", "dynamo"])
def test_a_second_turn_prefills_only_what_is_new_and_answers_the_same(rt, export):
    model = f"chat-{export}"
    one = rt.generate(model, messages=FIRST, session="s1", owner="alice", **ASK)
    assert one.meta["session"] == {"id": "s1", "status": "new", "reused_tokens": 0,
                                   "prefilled_tokens": one.meta["prompt_tokens"]}
    two = rt.generate(model, messages=second_turn(one.text), session="s1", owner="alice", **ASK)
    plain = rt.generate(model, messages=second_turn(one.text), **ASK)
    s = two.meta["session"]
    assert s["status"] == "reused" and s["reused_tokens"] >= one.meta["prompt_tokens"]
    assert s["reused_tokens"] + s["prefilled_tokens"] == plain.meta["prompt_tokens"]
    assert two.meta["token_ids"] == plain.meta["token_ids"], "reusing the cache changes nothing"
    assert "session" not in plain.meta


def test_evicted_sessions_re_prefill_and_say_so(rt):
    first = {}
    for sid in ("a", "b", "c"):  # room for two: "a" goes
        first[sid] = rt.generate("chat-fused", messages=FIRST, session=sid, owner="bob", **ASK)
    assert rt.sessions.stats()["sessions"] == 2
    again = rt.generate("chat-fused", messages=second_turn(first["a"].text), session="a", owner="bob", **ASK)
    assert again.meta["session"]["status"] == "evicted" and again.meta["session"]["reused_tokens"] == 0
    plain = rt.generate("chat-fused", messages=second_turn(first["a"].text), **ASK)
    assert again.meta["token_ids"] == plain.meta["token_ids"]
    assert rt.generate("chat-fused", messages=FIRST, session="c", owner="bob", **ASK).meta["session"]["status"] == "reused"


def test_sessions_never_cross_owners_or_models(rt):
    rt.generate("chat-fused", messages=FIRST, session="mine", owner="alice", **ASK)
    other = rt.generate("chat-fused", messages=FIRST, session="mine", owner="mallory", **ASK)
    assert other.meta["session"]["status"] == "new"  # mallory's own "mine", not alice's cache
    with pytest.raises(BadRequest, match="'mine' is a session of model 'chat-fused'"):
        rt.generate("chat-dynamo", messages=FIRST, session="mine", owner="alice", **ASK)


@pytest.mark.parametrize("params,why", [
    ({"session": "has space"}, "1 to 64 of"),
    ({"session": "x" * 65}, "longer than 64"),
    ({"session": "ok", "num_beams": 2}, "not with beam search"),
])
def test_bad_session_parameters_are_bad_requests(rt, params, why):
    with pytest.raises(BadRequest, match=why):
        rt.generate("chat-fused", messages=FIRST, owner="alice", **{**ASK, **params})


def test_idle_sessions_expire_and_bytes_are_bounded():
    now = [0.0]
    cache = SessionCache(SessionLimits(max_sessions=8, max_bytes=100, idle_ttl_s=60), clock=lambda: now[0])
    cache.put("o", "old", Session("m", None, [1], 10, 0.0))
    now[0] = 61.0
    assert cache.take("o", "old", "m") == (None, "evicted")
    cache.put("o", "a", Session("m", None, [1], 60, 0.0))
    cache.put("o", "b", Session("m", None, [1], 60, 0.0))  # 120 bytes > 100: "a" goes
    assert cache.stats() == {"sessions": 1, "prefixes": 0, "bytes": 60}
    assert cache.take("o", "a", "m")[1] == "evicted" and cache.take("o", "b", "m")[1] == "reused"
