"""Speculation and prefix reuse on SmolLM2-135M-Instruct, through both engines.

    edge-aigc bench --only reuse

Two of the zoo model's bundles of the same weights: the ONNX one the zoo ships (int4 blocks
of the GGUF file) and a ``gguf`` bundle of the GGUF file itself (llama.cpp; converted once
into ``--work``). For each, in rounds, one run of each system per round:

- **speculation** (tasks/text/lookup.py): greedy decoding of up to 96 tokens with drafts off,
  ``auto`` (where the measured costs say it pays) and ``on`` (always), on two prompt sets: *copy-heavy* (a tool call in JSON naming the request's
  entities, a quote, an edit of a given text) and *free chat*. Decode tokens/s and the
  share of drafted tokens accepted; the token ids must match (a mismatch fails the run).
- **prefix reuse** (tasks/text/sessions.py): the second request of a conversation behind a
  ~2,000-token system prompt listing a house's entities, as Home Assistant sends it: time
  to first token when the client's previous prompt is reused, and cold (a client the
  device has not seen).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_aigc import Runtime

from .common import Report, median

__all__ = ["bench_reuse", "COPY_CHATS", "FREE_CHATS", "house_prompt"]

TOOL = ("You control a smart home. Answer with one JSON object only: "
        '{"name": <tool>, "arguments": {...}}. Tools: light_set(entity_id, brightness), '
        "lock_set(entity_id, locked), climate_set(entity_id, temperature).")
COPY_CHATS = [
    [{"role": "system", "content": TOOL},
     {"role": "user", "content": 'Set "light.kitchen_ceiling_lamp" to brightness 40.'}],
    [{"role": "system", "content": TOOL},
     {"role": "user", "content": 'Lock "lock.garden_shed_back_door" now, please.'}],
    [{"role": "user", "content": "Repeat this sentence exactly, with nothing else: The quick brown fox "
                                 "jumps over the lazy dog while the farmer watches from the old red barn."}],
    [{"role": "user", "content": "Correct the spelling and give back the whole text: Tommorow we will "
                                 "meet at the libary at ten oclock to discus the new garden plans."}],
]
FREE_CHATS = [
    [{"role": "user", "content": "Tell me a short story about a cat who learns to swim."}],
    [{"role": "user", "content": "Give me three tips for sleeping better."}],
    [{"role": "user", "content": "Why do leaves change colour in autumn?"}],
]
ROOMS = ("kitchen", "hall", "porch", "attic", "garage", "study", "bedroom", "bathroom", "office", "garden")


def house_prompt(entities: int = 120) -> str:
    """A Home Assistant-like system prompt: every exposed entity, one per line (~2,000 tokens)."""
    lines = ["You are a voice assistant for a house. The exposed entities are:"]
    for i in range(entities):
        room, kind = ROOMS[i % len(ROOMS)], ("light", "switch", "sensor", "lock")[i // len(ROOMS) % 4]
        lines.append(f"- {kind}.{room}_{i}: '{room.title()} {kind} {i}' state=off area={room}")
    return "\n".join(lines) + "\nAnswer in one short sentence."


def _gguf_bundle(work: Path, progress) -> Path:
    """SmolLM2's GGUF file as a gguf bundle (gate included), built once into ``work``."""
    from converters import ConvertOptions, convert
    from converters.zoo.smollm2 import gguf_path
    from edge_aigc.device.profiles import get_profile

    out = work / "smollm2-gguf.eaigc"
    if not out.is_file():
        progress("converting SmolLM2's GGUF file to a gguf bundle (gate included; a few minutes)")
        [result] = convert(str(gguf_path(progress)), [get_profile("x86-avx2")], work / "smollm2-gguf-staging",
                           ConvertOptions(format="gguf", allow_degraded=True),
                           progress=lambda line: progress(f"  {line}"))
        result.bundle.replace(out)
    return out


def _decode_rate(result) -> float:
    m = result.meta
    return (m["generated_tokens"] - 1) / max(m["seconds"] - m["prefill_seconds"], 1e-9)


def _speculation(rt: Runtime, model: str, chats: list, repeats: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"off": [], "auto": [], "on": []}
    drafted = accepted = 0
    for _ in range(repeats):
        for chat in chats:
            runs = {mode: rt.generate(model, messages=chat, temperature=0.0, max_new_tokens=96,
                                      speculation=mode, owner=f"spec-{mode}") for mode in rates}
            if not runs["off"].meta["token_ids"] == runs["auto"].meta["token_ids"] == runs["on"].meta["token_ids"]:
                raise AssertionError(f"{model}: speculative greedy output differs from plain greedy output")
            for mode, result in runs.items():
                rates[mode].append(_decode_rate(result))
            drafted += runs["on"].meta["speculation"]["drafted"]
            accepted += runs["on"].meta["speculation"]["accepted"]
    ratio = {mode: median([a / o for a, o in zip(rates[mode], rates["off"])]) for mode in ("auto", "on")}
    return {"off_tps": median(rates["off"]), "auto_tps": median(rates["auto"]), "on_tps": median(rates["on"]),
            "auto_ratio": ratio["auto"], "on_ratio": ratio["on"], "accepted_share": accepted / max(drafted, 1),
            "drafted": drafted}


def _prefix(rt: Runtime, model: str, repeats: int) -> dict[str, Any]:
    system = {"role": "system", "content": house_prompt()}
    first = [system, {"role": "user", "content": "Is the porch light on?"}]
    warm, cold, reused = [], [], 0
    for r in range(repeats):
        answer = rt.generate(model, messages=first, temperature=0.0, max_new_tokens=12, owner="ha").text
        second = first + [{"role": "assistant", "content": answer},
                          {"role": "user", "content": "Then turn on the attic light."}]
        hit = rt.generate(model, messages=second, temperature=0.0, max_new_tokens=4, owner="ha")
        miss = rt.generate(model, messages=second, temperature=0.0, max_new_tokens=4, owner=f"new-{r}")
        if hit.meta["token_ids"] != miss.meta["token_ids"]:
            raise AssertionError(f"{model}: a reused prefix changed the answer")
        warm.append(hit.meta["prefill_seconds"])
        cold.append(miss.meta["prefill_seconds"])
        reused = hit.meta["cached_tokens"]
        prompt = hit.meta["prompt_tokens"]
    return {"prompt_tokens": prompt, "reused_tokens": reused, "warm_ms": median(warm) * 1e3,
            "cold_ms": median(cold) * 1e3, "ratio": median([w / c for w, c in zip(warm, cold)])}


def bench_reuse(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    from edge_aigc.zoo import zoo_bundle

    work.mkdir(parents=True, exist_ok=True)
    bundles = {"onnx int4 (the zoo's)": zoo_bundle("smollm2-135m", "x86-avx2").path,
               "llama.cpp Q4_1 (gguf bundle)": _gguf_bundle(work, progress)}
    data: dict[str, Any] = {}
    report = Report(f"Speculation and prefix reuse — SmolLM2-135M-Instruct (greedy, up to 96 tokens, "
                    f"median of {repeats} rounds)",
                    ["engine", "prompts", "plain tok/s", "auto tok/s", "auto ratio", "always drafting tok/s",
                     "always ratio", "drafts accepted (always)"])
    for label, path in bundles.items():
        with Runtime([path], "x86-avx2") as rt:
            model = rt.available()[0]
            progress(f"speculation and prefix reuse: {label}")
            rows = {kind: _speculation(rt, model, chats, repeats)
                    for kind, chats in (("copy-heavy", COPY_CHATS), ("free chat", FREE_CHATS))}
            rows["prefix"] = _prefix(rt, model, repeats)
        data[label] = rows
        for kind in ("copy-heavy", "free chat"):
            f = rows[kind]
            report.add(label, kind, f["off_tps"], f["auto_tps"], f"{f['auto_ratio']:.2f}x", f["on_tps"],
                       f"{f['on_ratio']:.2f}x", f"{f['accepted_share']:.0%}")
    for label, rows in data.items():
        p = rows["prefix"]
        report.notes.append(f"{label}: second request behind a {p['prompt_tokens']}-token prompt: time to first "
                            f"token {p['warm_ms']:.0f} ms with {p['reused_tokens']} tokens reused vs "
                            f"{p['cold_ms']:.0f} ms cold ({p['ratio']:.2f}x)")
    report.notes.append("Token ids with and without drafts, and with and without a reused prefix, were "
                        "identical on every prompt (the run fails otherwise).")
    return report, data
