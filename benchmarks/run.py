"""Run the benchmarks side by side and write JSON, plots and benchmarks/README.md.

    edge-aigc bench [--quick] [--only text,image,audio,sizes,mqtt,http,cold,threads,llm,speech] [--out DIR]

``--quick`` (a few minutes once the artifacts are built): the 26M Llama and the zoo models,
shorter decodes, fewer repeats. Without it: also a ~100M Llama, decodes to position 528,
every image/audio recipe. TFLite LMs run on the zoo model only: with the Llamas' 1,024-slot
caches they decode at ~11 tokens/s (see analysis.md). Built artifacts are kept in
``--work`` between runs (delete a bundle there to rebuild it after a converter change).
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from . import generators, http, llm, ota, prune, service, sizes, speech, text, threads
from .common import machine, write_json
from .plots import plot_bars, plot_latency
from .targets import targets

__all__ = ["run", "run_from_args"]

HERE = Path(__file__).parent
ZOO = Path(__file__).parent.parent / "converters" / "zoo" / "artifacts" / "fortune-gpt"


def _text_systems() -> list[tuple[str, str, str]]:
    # each of ours next to genai at the same precision: runs compared are moments apart
    return [("ours onnx fp32", "ours", "onnx:fp32"), ("genai fp32", "genai", "fp32"),
            ("ours onnx int8", "ours", "onnx:int8-dynamic"), ("genai int8", "genai", "int8"),
            ("ours onnx int4", "ours", "onnx:int4"), ("genai int4", "genai", "int4"),
            ("pytorch eager fp32", "eager", "")]


def run(quick: bool, only: set[str], out: Path, work: Path, progress=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    repeats = 3 if quick else 7
    reports, data = [], {"machine": machine(), "quick": quick, "started": dt.datetime.now(dt.UTC).isoformat()}
    if "text" in only:
        llamas = [("llama-26m", text.LLAMA_26M)] + ([] if quick else [("llama-100m", text.LLAMA_100M)])
        for name, shape in llamas:
            model = text.random_llama(work / name, shape)
            steps = 112 if quick else 512
            r, d = text.bench_text(model, work, _text_systems(), steps, repeats, progress)
            reports.append(r)
            data[f"text:{name}"] = d
            plot_latency(d["curves"], text.PROMPT_TOKENS, f"Decode latency by position — {name}",
                         out / f"text-latency-{name}.png")
        zoo_systems = [("ours onnx fp32", "ours", "onnx:fp32"), ("ours onnx int8", "ours", "onnx:int8-dynamic"),
                       ("ours tflite int8", "ours", "tflite:int8-dynamic"), ("pytorch eager fp32", "eager", "")]
        r, d = text.bench_text(ZOO, work, zoo_systems, 96, repeats, progress)
        reports.append(r)
        data["text:fortune-gpt"] = d
        plot_latency(d["curves"], text.PROMPT_TOKENS, "Decode latency by position — fortune-gpt (context 128)",
                     out / "text-latency-fortune-gpt.png")
    if quick:
        generators.RECIPES[:] = [(f, r) for f, r in generators.RECIPES if r != "int8-static"]
    for kind, fn in (("image", generators.bench_image), ("audio", generators.bench_audio)):
        if kind in only:
            r, d = fn(work, repeats=5 if quick else 11, progress=progress)
            reports.append(r)
            data[kind] = d
            plot_bars(d, "images_per_s" if kind == "image" else "rtf", r.title, out / f"{kind}.png",
                      higher_is_better=kind == "image")
    if "sizes" in only:
        r, d = sizes.size_table(sorted(work.glob("*.eaigc")))
        reports.append(r)
        data["sizes"] = d
    zoo_bundles = {m: Path(__file__).parent.parent / "edge_aigc" / "zoo" / f"{m}-x86-avx2.eaigc"
                   for m in ("fortune-gpt", "digits", "tones")}
    if "mqtt" in only:
        r, d = service.bench_mqtt(zoo_bundles["digits"], 100 if quick else 300, 3.0 if quick else 10.0, progress)
        reports.append(r)
        data["mqtt"] = d
    if "http" in only:
        r, d = http.bench_http(zoo_bundles["digits"], zoo_bundles["fortune-gpt"], 100 if quick else 300,
                               3.0 if quick else 10.0, 3 if quick else 5, progress)
        reports.append(r)
        data["http"] = d
    if "cold" in only:
        r, d = service.bench_cold_start(zoo_bundles, 3 if quick else 5, progress)
        reports.append(r)
        data["cold"] = d
    if "llm" in only:
        r, d = llm.bench_llm(work / "llm", 3 if quick else 5, progress)
        reports.append(r)
        data["llm"] = d
    if "speech" in only:
        r, d = speech.bench_speech(work / "speech", 3 if quick else 7, progress)
        reports.append(r)
        data["speech"] = d
    if "ota" in only:
        r, d = ota.bench_ota(zoo_bundles["digits"], 3 if quick else 5, progress)
        reports.append(r)
        data["ota"] = d
    if "prune" in only:
        r, d = prune.bench_prune(work / "prune", 5 if quick else 31, progress)  # timing is ~1 s a round
        reports.append(r)
        data["prune"] = d
    if "threads" in only:
        r, d = threads.bench_threads(zoo_bundles["fortune-gpt"], "x86-avx2", 64, 5 if quick else 9, progress)
        reports.append(r)
        data["threads"] = d
    data["targets"] = targets(data)
    data["finished"] = dt.datetime.now(dt.UTC).isoformat()
    write_json(out / "latest.json", data)
    for r in reports:
        print(r.markdown())
    _write_readme(out, data, reports, quick)
    return data


def _readme(out: Path) -> Path:
    """The committed README sits beside results/; a run with another --out gets its own."""
    return HERE / "README.md" if out.resolve() == (HERE / "results").resolve() else out / "README.md"


_VERSIONED = ("onnxruntime", "onnxruntime-genai", "torch", "transformers", "ai-edge-litert")


def _write_readme(out: Path, data: dict, reports: list, quick: bool) -> None:
    m = data["machine"]
    lines = [
        "# Benchmarks", "",
        "Side-by-side runs of our runtime against the tools a user would otherwise pick, on the",
        "same model, inputs, thread count and machine. Regenerate with `edge-aigc bench"
        + (" --quick" if quick else "") + "` (needs the `host`, `tflite` and `bench` extras; the timed systems are interleaved run by run); it rewrites this",
        f"file, `{out.name}/latest.json` and the plots. Medians of repeated runs; this machine is shared",
        "and noisy, so read ratios, not absolute numbers.", "",
        f"**Machine:** {m['cpu']}, {m['cores']} cores ({m['arch']}), {m['threads']} threads for every system; "
        f"Python {m['python']}, " + ", ".join(f"{k} {m[k]}" for k in _VERSIONED if k in m)
        + f". **Run:** {data['finished'][:16]} UTC"
        + (", `--quick`" if quick else "") + ".", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in data["targets"]]
    lines += ["", "## Results", ""]
    lines += [r.markdown() for r in reports]
    lines += ["## Plots", ""]
    home = _readme(out) == HERE / "README.md"
    prefix = f"{out.name}/" if home else ""
    lines += [f"![{p.stem}]({prefix}{p.name})" for p in sorted(out.glob("*.png"))]
    lines += ["", (HERE / "analysis.md").read_text()]
    _readme(out).write_text("\n".join(lines) + "\n")


def run_from_args(args: argparse.Namespace, only: set[str]) -> int:
    """Entry point of ``edge-aigc bench`` (which parses and checks the arguments)."""
    start = time.perf_counter()
    out = Path(args.out) if args.out else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    run(args.quick, only, out, Path(args.work), progress=lambda line: print(f"[bench] {line}", flush=True))
    print(f"[bench] done in {time.perf_counter() - start:.0f} s; wrote {out}/latest.json and {_readme(out)}")
    return 0

