"""The targets of the benchmark issue, each judged met or not from the measured data."""
from __future__ import annotations

from typing import Any

__all__ = ["targets"]


def _row(target: str, value: float | None, limit: float, fmt: str, at_least: bool = True) -> dict[str, Any]:
    if value is None:
        return {"target": target, "measured": "not measured", "met": "—"}
    met = value >= limit if at_least else value <= limit
    return {"target": target, "measured": fmt.format(value), "met": "yes" if met else "**no**"}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _paired(data: dict, model: str, a: str, b: str) -> float | None:
    from .text import paired_ratio

    return paired_ratio(data.get(f"text:{model}", {}).get("results", {}), a, b)


def _speech(data: dict) -> list[dict[str, Any]]:
    rows = data["speech"]["rows"]
    same, total = data["speech"]["same_phonemes"]
    passing = [r for k, r in rows.items() if k.startswith("ours") and r["gate"] == "passed"]
    best = max(passing, key=lambda r: r["speedup"]) if passing else None
    return [_row("speech: phoneme ids identical to piper-tts'", same / total, 1.0, "{:.0%} of sentences"),
            _row("speech: ours fp32 ≥ 1.0x piper-tts' speed", rows["ours fp32"]["speedup"], 1.0, "{:.2f}x"),
            _row("speech: the fastest recipe that passes the gate ≥ 1.5x piper-tts",
                 best["speedup"] if best else None, 1.5, "{:.2f}x")]


def targets(data: dict) -> list[dict[str, Any]]:
    rows = _speech(data) if "speech" in data else []
    for model in ("llama-26m", "llama-100m"):
        if f"text:{model}" not in data:
            continue
        for p in ("fp32", "int8", "int4"):
            rows.append(_row(f"{model}: decode ≥ 1.0x onnxruntime-genai at {p}",
                             _paired(data, model, f"ours onnx {p}", f"genai {p}"),
                             1.0, "{:.2f}x"))
        rows.append(_row(f"{model}: decode ≥ 3.5x PyTorch eager at fp32",
                         _paired(data, model, "ours onnx fp32", "pytorch eager fp32"),
                         3.5, "{:.2f}x"))
        rows.append(_row(f"{model}: int4 decode ≥ 5x our fp32",
                         _paired(data, model, "ours onnx int4", "ours onnx fp32"),
                         5.0, "{:.2f}x"))
        r = data[f"text:{model}"]["results"].get("ours onnx fp32", {})
        if r:
            rows.append(_row(f"{model}: latency at the last position ≤ 1.3x at position 16 (ours onnx fp32)",
                             _ratio(r["latency_ms_at_last"], r["latency_ms_at_16"]), 1.3, "{:.2f}x",
                             at_least=False))
    for kind, key, better in (("image", "images_per_s", True), ("audio", "rtf", False)):
        d = data.get(kind)
        if d:
            base = d["pytorch eager fp32"][key]
            ours = [v[key] for k, v in d.items() if k.startswith("ours")]
            best = (max(ours) / base) if better else (base / min(ours)) if ours else None
            rows.append(_row(f"{kind}: best of ours ≥ 2x PyTorch eager", best, 2.0, "{:.2f}x"))
    if d := data.get("audio"):
        rows.append(_row("audio: real-time factor ≤ 0.05 (zoo tones, ONNX int8-dynamic)",
                         d.get("ours onnx int8-dynamic", {}).get("rtf"), 0.05, "{:.4f}", at_least=False))
    if s := data.get("sizes"):
        int8 = [b["size_ratio"] for b in s["bundles"] if b["recipe"].startswith("int8")]
        rows.append(_row("int8 artifacts ≤ 0.3x fp32 size (worst bundle built)", max(int8) if int8 else None,
                         0.3, "{:.2f}x", at_least=False))
    if llm := data.get("llm"):
        rows += _llm_targets(llm["rows"])
    if m := data.get("mqtt"):
        rows.append(_row("MQTT overhead p50 ≤ 5 ms", m["overhead_p50_ms"], 5.0, "{:.1f} ms", at_least=False))
    if m := data.get("http"):
        rows.append(_row("HTTP overhead p50 ≤ 5 ms", m["overhead_p50_ms"], 5.0, "{:.1f} ms", at_least=False))
    if c := data.get("cold"):
        from statistics import median

        rows.append(_row("cold start to online ≤ 2 s (zoo models)", median(c["cold_start_s"]), 2.0, "{:.2f} s",
                         at_least=False))
        peak = max(c["peak_rss_mb"].values()) if c["peak_rss_mb"] else None
        rows.append(_row("peak RSS per model ≤ the smallest budget (rpi-zero-2w)", peak,
                         min(c["budgets_mb"].values()), "{:.0f} MB", at_least=False))
    return rows


def _llm_targets(rows: dict) -> list[dict[str, Any]]:
    """#16's: decode ≥ 1.2x llama.cpp at each width at equal or better perplexity, prefill ≥ 1.5x,
    decode ≥ 0.8 of the bandwidth limit; a row at worse quality (perplexity or known answers kept,
    each against its own side's float32) says so."""
    from .llm import PAIRS

    out = []
    for kind, ours in PAIRS:
        a, b = rows[ours], rows[kind]
        # each side's perplexity relative to its own float32 (their tokenizers differ slightly)
        rel_a, rel_b = a["perplexity"] / rows["fp32"]["perplexity"], b["perplexity"] / rows["F32"]["perplexity"]
        worse = "" if rel_a <= rel_b + 0.001 else f" — at worse perplexity (+{rel_a - 1:.2%} vs +{rel_b - 1:.2%})"
        if a.get("answers_kept", 1) < b.get("answers_kept", 1):  # results before 2026-12-03 have no answers
            worse += f" — keeping fewer answers ({a['answers_kept']:.2f} vs {b['answers_kept']:.2f})"
        out.append(_row(f"SmolLM2 {ours}: decode ≥ 1.2x llama.cpp {kind}{worse}",
                        a["decode_tps"] / b["decode_tps"], 1.2, "{:.2f}x"))
        out.append(_row(f"SmolLM2 {ours}: prefill ≥ 1.5x llama.cpp {kind}",
                        a["prefill_tps"] / b["prefill_tps"], 1.5, "{:.2f}x"))
        out.append(_row(f"SmolLM2 {ours}: decode ≥ 0.8 of the bandwidth limit", a["bandwidth_fraction"], 0.8,
                        "{:.2f}"))
    zoo = next((k for k in rows if "the zoo's" in k), None)
    if zoo:  # the shipped bundle, against the file as shipped
        a, b = rows[zoo], rows["Q4_1"]
        out.append(_row(f"SmolLM2 {zoo}: decode ≥ 1.2x llama.cpp Q4_1", a["decode_tps"] / b["decode_tps"], 1.2,
                        "{:.2f}x"))
        out.append(_row(f"SmolLM2 {zoo}: prefill ≥ 1.5x llama.cpp Q4_1", a["prefill_tps"] / b["prefill_tps"], 1.5,
                        "{:.2f}x"))
    return out
