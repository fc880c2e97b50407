"""Draft-free speculative decoding (prompt lookup): greedy output is exactly plain greedy
decoding's on every engine, drafts are taken where the answer copies the prompt, and the
cache after a speculative turn is what a session's next turn needs."""
from __future__ import annotations

import pytest

from converters.gate.calibration import BUILTIN_TEXTS
from edge_aigc import Runtime
from edge_aigc.tasks.text.lookup import EXPLORE_EVERY, DraftCosts, NgramDrafter
from tests.unit.tasks.conftest import ENGINES

LONG = max(BUILTIN_TEXTS, key=len)              # a text the tiny model learnt, ~30 tokens
COPY = LONG + "\n" + LONG[:16]                   # the answer continues a quote of the prompt
FREE = "Why is the sky"


@pytest.fixture(scope="module")
def rt(engine_bundles):
    with Runtime(engine_bundles, "x86-avx2") as runtime:
        yield runtime


def greedy(rt, model, prompt, speculation, **extra):
    return rt.generate(model, prompt=prompt, temperature=0.0, speculation=speculation, **extra)


@pytest.mark.parametrize("model", ENGINES)
def test_speculative_greedy_output_is_plain_greedy_output(rt, model):
    for prompt, tokens in ((COPY, 48), (FREE, 24)):
        plain = greedy(rt, model, prompt, "off", max_new_tokens=tokens)
        for mode in ("on", "auto"):
            fast = greedy(rt, model, prompt, mode, max_new_tokens=tokens)
            assert fast.meta["token_ids"] == plain.meta["token_ids"] and fast.text == plain.text
        assert "speculation" not in plain.meta
    spec = greedy(rt, model, COPY, "on", max_new_tokens=48).meta["speculation"]
    assert spec["accepted"] >= 8, spec   # the quote's continuation came from drafts


@pytest.mark.parametrize("model", ENGINES)
@pytest.mark.parametrize("budget", [1, 2, 3, 7])
def test_budgets_stops_and_penalties_end_where_plain_decoding_ends(rt, model, budget):
    for extra in ({}, {"repetition_penalty": 1.3}):
        plain = greedy(rt, model, COPY, "off", max_new_tokens=budget, **extra)
        fast = greedy(rt, model, COPY, "on", max_new_tokens=budget, **extra)
        assert fast.meta["token_ids"] == plain.meta["token_ids"], extra
        assert fast.meta["generated_tokens"] == budget == plain.meta["generated_tokens"]
    long = greedy(rt, model, COPY, "off", max_new_tokens=32).text
    stop = long[len(long) // 2:len(long) // 2 + 3]
    plain = greedy(rt, model, COPY, "off", max_new_tokens=32, stop=[stop])
    fast = greedy(rt, model, COPY, "on", max_new_tokens=32, stop=[stop])
    assert fast.text == plain.text and fast.meta["finish_reason"] == "stop"


@pytest.mark.parametrize("model", ENGINES)
def test_a_session_after_a_speculative_turn_continues_as_a_fresh_run(rt, model):
    first = rt.generate(model, prompt=COPY, temperature=0.0, max_new_tokens=20, session=f"spec-{model}", owner="t",
                        speculation="on")
    assert first.meta["speculation"]["accepted"] > 0
    follow = COPY + first.text + " and"
    second = rt.generate(model, prompt=follow, temperature=0.0, max_new_tokens=20, session=f"spec-{model}", owner="t")
    fresh = greedy(rt, model, follow, "off", max_new_tokens=20)
    assert second.meta["session"]["reused_tokens"] > first.meta["prompt_tokens"]
    assert second.meta["token_ids"] == fresh.meta["token_ids"]


def test_sampling_never_drafts(rt):
    sampled = rt.generate("fused", prompt=COPY, temperature=0.9, seed=3, max_new_tokens=16)
    assert "speculation" not in sampled.meta


def test_the_drafter_proposes_what_followed_the_suffix():
    drafter = NgramDrafter([5, 6, 7, 8, 9, 1, 2, 5, 6], always=True)
    assert drafter.draft(3) == [7, 8, 9]            # "5 6" came before, followed by 7 8 9
    assert drafter.draft(2) == [7, 8]               # never more than asked
    assert NgramDrafter([1, 2, 3], always=True).draft(4) == []        # nothing repeats
    assert NgramDrafter([4, 1, 2, 4], always=True).draft(4) == []     # one repeated token is not enough


def test_drafts_are_as_long_as_pays_on_the_measured_costs():
    """Expected tokens per second decide: a cheap check of likely tokens drafts long, a
    check that costs a step per token (a compute-bound CPU) drafts nothing but a rare probe."""
    cheap = NgramDrafter([], DraftCosts(accept=0.9, step_s=0.010, token_s=0.001))
    assert cheap.length(10) >= 6
    assert NgramDrafter([], DraftCosts(accept=0.2, step_s=0.010, token_s=0.001)).length(10) <= 2
    costly = NgramDrafter([], DraftCosts(accept=0.9, step_s=0.010, token_s=0.010))
    assert costly.length(10) == 0
    costly.idle = EXPLORE_EVERY
    assert costly.length(10) == 1                   # a one-token look now and then
    fresh = NgramDrafter([])
    assert fresh.length(10) == 4                    # nothing measured: measure
    fresh.record(0, 0, 0.010)                       # a plain step ...
    fresh.record(4, 1, 0.050)                       # ... and a draft of 4 that cost 4 steps
    assert fresh.costs.token_s == pytest.approx(0.010) and fresh.costs.accept < 0.6
    assert fresh.length(10) == 0
