"""Prefix reuse across stateless requests: a client that resends its conversation prefills
only what is new, gets the answer a cold run gives, and never reuses another client's cache."""
from __future__ import annotations

import pytest

from edge_aigc import Runtime
from edge_aigc.tasks.text.sessions import Session, SessionCache, SessionLimits
from tests.unit.tasks.conftest import ENGINES

SYSTEM = ("You are the assistant of a house. The lights are: kitchen, hall, porch, attic, garage, "
          "study and bedroom. The locks are: front door, back door and shed. Answer briefly.")
ASK = {"max_new_tokens": 8, "temperature": 0.0}


def conversation(*turns: str) -> str:
    return SYSTEM + "".join(f"\nuser: {t}\nassistant:" for t in turns)


@pytest.fixture(scope="module")
def rt(engine_bundles):
    with Runtime(engine_bundles, "x86-avx2") as runtime:
        yield runtime


@pytest.mark.parametrize("model", ENGINES)
def test_a_resent_conversation_prefills_only_its_new_turn_and_answers_as_cold(rt, model, engine_bundles):
    first = rt.generate(model, prompt=conversation("hall light"), owner="alice", **ASK)
    again = conversation("hall light") + first.text + conversation("and the porch")[len(SYSTEM):]
    second = rt.generate(model, prompt=again, owner="alice", **ASK)
    assert second.meta["cached_tokens"] >= first.meta["prompt_tokens"] - 1
    with Runtime(engine_bundles, "x86-avx2") as cold:
        expected = cold.generate(model, prompt=again, owner="alice", **ASK)
    assert expected.meta["cached_tokens"] == 0
    assert second.meta["token_ids"] == expected.meta["token_ids"]


@pytest.mark.parametrize("model", ENGINES)
def test_another_clients_cache_is_never_reused(rt, model):
    rt.generate(model, prompt=conversation("hall light"), owner="alice", **ASK)
    mallory = rt.generate(model, prompt=conversation("hall light", "porch"), owner="mallory", **ASK)
    assert mallory.meta["cached_tokens"] == 0
    # and alice's own cache is still hers after mallory's request
    assert rt.generate(model, prompt=conversation("hall light"), owner="alice", **ASK).meta["cached_tokens"] > 0


def test_prefix_entries_are_bounded_and_go_before_sessions():
    cache = SessionCache(SessionLimits(max_sessions=4, max_bytes=100, max_prefixes=2))
    cache.put("o", "kept", Session("m", None, [1], 40, 0.0))
    for owner in ("a", "b", "c"):                      # room for two prefix entries: "a" goes
        cache.put_prefix(owner, "m", Session("m", None, [1], 20, 0.0))
    assert cache.take_prefix("a", "m") is None and cache.stats()["prefixes"] == 2
    cache.put("o", "big", Session("m", None, [1], 50, 0.0))  # 130 bytes > 100: prefixes go first
    assert cache.stats() == {"sessions": 2, "prefixes": 0, "bytes": 90}
    assert cache.take("o", "kept", "m")[1] == "reused"
    cache.drop_model("m")
    cache.put_prefix("a", "m", Session("m", None, [1], 20, 0.0))
    assert cache.take_prefix("a", "other") is None      # per model, too
    off = SessionCache(SessionLimits(max_prefixes=0))
    off.put_prefix("a", "m", Session("m", None, [1], 20, 0.0))
    assert off.take_prefix("a", "m") is None
