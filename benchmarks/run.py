"""Run the benchmarks side by side and write JSON, plots and benchmarks/README.md.

    edge-aigc bench [--quick] [--only text,image,audio,sizes,mqtt,http,cold,threads,llm,gate-noise,reuse,speech] [--out DIR]

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import constrain, gate_noise, generators, http, llm, ota, prune, reuse, service, sizes, speech, text, threads, wyoming
from .common import machine, write_json
from .plots import plot_bars, plot_latency
from .targets import targets

__all__ = ["PARTS", "run", "run_from_args"]

HERE = Path(__file__).parent
ZOO = Path(__file__).parent.parent / "converters" / "zoo" / "artifacts" / "fortune-gpt"


def _text_systems() -> list[tuple[str, str, str]]:
    # each of ours next to genai at the same precision: runs compared are moments apart
    return [("ours onnx fp32", "ours", "onnx:fp32"), ("genai fp32", "genai", "fp32"),
            ("ours onnx int8", "ours", "onnx:int8-dynamic"), ("genai int8", "genai", "int8"),
            ("ours onnx int4", "ours", "onnx:int4"), ("genai int4", "genai", "int4"),
            ("pytorch eager fp32", "eager", "")]


@dataclass
class Bench:
    """One ``edge-aigc bench`` run's settings, as every part reads them."""

    quick: bool
    out: Path
    work: Path
    progress: Callable[[str], None]

    @property
    def repeats(self) -> int:
        return 3 if self.quick else 7

    def zoo(self, model: str) -> Path:
        return Path(__file__).parent.parent / "edge_aigc" / "zoo" / f"{model}-x86-avx2.eaigc"


Part = Iterator[tuple[str, Any, dict]]  # (key in latest.json, report, data)


def _text(b: Bench) -> Part:
    llamas = [("llama-26m", text.LLAMA_26M)] + ([] if b.quick else [("llama-100m", text.LLAMA_100M)])
    for name, shape in llamas:
        model = text.random_llama(b.work / name, shape)
        r, d = text.bench_text(model, b.work, _text_systems(), 112 if b.quick else 512, b.repeats, b.progress)
        plot_latency(d["curves"], text.PROMPT_TOKENS, f"Decode latency by position — {name}",
                     b.out / f"text-latency-{name}.png")
        yield f"text:{name}", r, d
    zoo_systems = [("ours onnx fp32", "ours", "onnx:fp32"), ("ours onnx int8", "ours", "onnx:int8-dynamic"),
                   ("ours tflite int8", "ours", "tflite:int8-dynamic"), ("pytorch eager fp32", "eager", "")]
    r, d = text.bench_text(ZOO, b.work, zoo_systems, 96, b.repeats, b.progress)
    plot_latency(d["curves"], text.PROMPT_TOKENS, "Decode latency by position — fortune-gpt (context 128)",
                 b.out / "text-latency-fortune-gpt.png")
    yield "text:fortune-gpt", r, d


def _generator(kind: str) -> Callable[[Bench], Part]:
    def part(b: Bench) -> Part:
        if b.quick:
            generators.RECIPES[:] = [(f, r) for f, r in generators.RECIPES if r != "int8-static"]
        fn = generators.bench_image if kind == "image" else generators.bench_audio
        r, d = fn(b.work, repeats=5 if b.quick else 11, progress=b.progress)
        plot_bars(d, "images_per_s" if kind == "image" else "rtf", r.title, b.out / f"{kind}.png",
                  higher_is_better=kind == "image")
        yield kind, r, d
    return part


def _one(key: str, fn: Callable[[Bench], tuple[Any, dict]]) -> Callable[[Bench], Part]:
    def part(b: Bench) -> Part:
        yield (key, *fn(b))
    return part


# Every part by its --only name (edge_aigc/cli/bench.py lists the same names without importing this).
PARTS: dict[str, Callable[[Bench], Part]] = {
    "text": _text,
    "image": _generator("image"),
    "audio": _generator("audio"),
    "sizes": _one("sizes", lambda b: sizes.size_table(sorted(b.work.glob("*.eaigc")))),
    "mqtt": _one("mqtt", lambda b: service.bench_mqtt(b.zoo("digits"), 100 if b.quick else 300,
                                                      3.0 if b.quick else 10.0, b.progress)),
    "http": _one("http", lambda b: http.bench_http(b.zoo("digits"), b.zoo("fortune-gpt"), 100 if b.quick else 300,
                                                   3.0 if b.quick else 10.0, 3 if b.quick else 5, b.progress)),
    "cold": _one("cold", lambda b: service.bench_cold_start({m: b.zoo(m) for m in ("fortune-gpt", "digits", "tones")},
                                                            3 if b.quick else 5, b.progress)),
    "llm": _one("llm", lambda b: llm.bench_llm(b.work / "llm", 3 if b.quick else 5, b.progress)),
    "gate-noise": _one("gate-noise", lambda b: gate_noise.bench_gate_noise(b.work / "llm", b.progress)),
    "reuse": _one("reuse", lambda b: reuse.bench_reuse(b.work / "llm", 3 if b.quick else 5, b.progress)),
    "speech": _one("speech", lambda b: speech.bench_speech(b.work / "speech", 3 if b.quick else 7, b.progress)),
    "constrain": _one("constrain", lambda b: constrain.bench_constrain(3 if b.quick else 9, b.progress)),
    "wyoming": _one("wyoming", lambda b: wyoming.bench_wyoming(3 if b.quick else 7, b.progress)),
    "ota": _one("ota", lambda b: ota.bench_ota(b.zoo("digits"), 3 if b.quick else 5, b.progress)),
    # timing is ~1 s a round
    "prune": _one("prune", lambda b: prune.bench_prune(b.work / "prune", 5 if b.quick else 31, b.progress)),
    "threads": _one("threads", lambda b: threads.bench_threads(b.zoo("fortune-gpt"), "x86-avx2", 64,
                                                               5 if b.quick else 9, b.progress)),
}


def run(quick: bool, only: set[str], out: Path, work: Path, progress=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(quick, out, work, progress)
    reports, data = [], {"machine": machine(), "quick": quick, "started": dt.datetime.now(dt.UTC).isoformat()}
    for name, part in PARTS.items():
        if name in only:
            for key, report, figures in part(bench):
                reports.append(report)
                data[key] = figures
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
