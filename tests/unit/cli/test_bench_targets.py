"""The LLM benchmark's targets: a speed ratio at worse quality says so beside it."""
from benchmarks.llm import PAIRS
from benchmarks.targets import targets


def _row(decode, perplexity, kept):
    return {"decode_tps": decode, "prefill_tps": 100.0, "perplexity": perplexity, "answers_kept": kept,
            "bandwidth_fraction": 0.5}


def _decode_targets(rows):
    return {t["target"]: t for t in targets({"llm": {"rows": rows}}) if "decode ≥ 1.2x" in t["target"]}


def test_fewer_answers_kept_than_the_peer_is_named_beside_the_ratio():
    rows = {"F32": _row(50, 18.0, 1.0), "fp32": _row(60, 18.0, 1.0)}
    rows |= {PAIRS[1][0]: _row(100, 18.0, 0.79), PAIRS[1][1]: _row(130, 18.0, 0.86)}  # ours keeps more
    rows |= {PAIRS[2][0]: _row(100, 18.0, 0.93), PAIRS[2][1]: _row(130, 18.0, 0.90)}  # ours keeps fewer
    found = _decode_targets(rows)
    assert "SmolLM2 int8: decode ≥ 1.2x llama.cpp Q8_0" in found
    assert found[f"SmolLM2 {PAIRS[2][1]}: decode ≥ 1.2x llama.cpp Q4_1 — keeping fewer answers (0.90 vs 0.93)"][
        "met"] == "yes"


def test_results_from_before_the_answer_columns_still_give_targets():
    rows = {kind: _row(50, 18.0, 1.0) for pair in PAIRS for kind in pair}
    for row in rows.values():
        del row["answers_kept"]
    rows["int8"]["perplexity"] = 18.5
    found = _decode_targets(rows)
    assert found["SmolLM2 int8: decode ≥ 1.2x llama.cpp Q8_0 — at worse perplexity (+2.78% vs +0.00%)"]["met"] == "**no**"
    assert "SmolLM2 fp32: decode ≥ 1.2x llama.cpp F32" in found
