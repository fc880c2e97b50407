"""Text decode: our runtime (ONNX, TFLite) vs PyTorch eager vs onnxruntime-genai, same weights.

Every system runs the same prompt, greedy, on the same thread count, and reports its
prefill time, decode tokens/s and per-token latency by position. The models are local
Hugging Face directories: the zoo's fortune-gpt, and random-weight Llamas built here
(genai's builder takes Llama, not GPT-2).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import Report, median, threads

__all__ = ["LLAMA_26M", "LLAMA_100M", "random_llama", "SYSTEMS", "bench_text", "DecodeRun", "paired_ratio"]

LLAMA_26M = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                 intermediate_size=1408)
LLAMA_100M = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                  intermediate_size=2048)
VOCAB, CONTEXT, PROMPT_TOKENS = 8192, 1024, 16
SETTLE_S = 0.5


@dataclass
class DecodeRun:
    prefill_s: float
    step_s: list[float]            # latency of the step that produced token i (position PROMPT + i)
    tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return len(self.step_s) / sum(self.step_s)


def random_llama(directory: Path, shape: dict, seed: int = 0) -> Path:
    """A random-weight Llama with a BPE tokenizer trained on Debian's fortunes (or built-in text)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    if (directory / "model.safetensors").is_file():
        return directory
    from converters.gate.calibration import BUILTIN_TEXTS
    try:
        from converters.zoo.text import load_fortunes
        texts = load_fortunes()[0]
    except OSError:
        texts = BUILTIN_TEXTS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=CONTEXT, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0, **shape)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(directory)
    return directory


def _prompt(model_dir: Path) -> list[int]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(
        "You will meet a tall dark stranger who tells you a long story about the sea and ").ids
    return (ids * PROMPT_TOKENS)[:PROMPT_TOKENS]


# -- the systems: each returns a function (prompt, steps) -> DecodeRun ----------------------------
def _timed_greedy(prefill: Callable[[list[int]], Any], step: Callable[[int], Any], prompt: list[int],
                  steps: int) -> DecodeRun:
    """Greedy decode timed step by step: ``prefill(prompt)`` and ``step(token)`` return logits."""
    start = time.perf_counter()
    logits = prefill(prompt)
    prefill_s, lat, toks = time.perf_counter() - start, [], []
    for _ in range(steps):
        tok = int(np.argmax(logits))
        toks.append(tok)
        start = time.perf_counter()
        logits = step(tok)
        lat.append(time.perf_counter() - start)
    return DecodeRun(prefill_s, lat, toks)


def ours(bundle: Path) -> Callable[[list[int], int], DecodeRun]:
    from edge_aigc import Runtime

    rt = Runtime([bundle], profile="x86-avx2", threads=threads())
    loop = rt.model(rt.loaded()[0]).task.loop

    def run(prompt: list[int], steps: int) -> DecodeRun:
        state = loop.start(1)
        return _timed_greedy(lambda ids: loop.step(state, np.array([ids]), last_only=True)[0, -1],
                             lambda tok: loop.step(state, np.array([[tok]]))[0, -1], prompt, steps)
    return run


def eager(model_dir: Path) -> Callable[[list[int], int], DecodeRun]:
    """Hugging Face eager with its KV cache: what generate(do_sample=False) runs, step by step."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads())
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()

    @torch.no_grad()
    def run(prompt: list[int], steps: int) -> DecodeRun:
        cache: dict[str, Any] = {}

        def forward(ids: list[int]):
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache.get("past"), use_cache=True)
            cache["past"] = out.past_key_values
            return out.logits[0, -1].numpy()
        return _timed_greedy(forward, lambda tok: forward([tok]), prompt, steps)
    return run


def genai(genai_dir: Path) -> Callable[[list[int], int], DecodeRun]:
    import onnxruntime_genai as og

    cfg_path = genai_dir / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads()
    cfg_path.write_text(json.dumps(cfg, indent=1))
    model = og.Model(str(genai_dir))

    def run(prompt: list[int], steps: int) -> DecodeRun:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + steps + 1, do_sample=False)
        gen = og.Generator(model, params)
        start = time.perf_counter()
        gen.append_tokens(np.array(prompt, np.int32))
        prefill, lat = time.perf_counter() - start, []
        for _ in range(steps):
            start = time.perf_counter()
            gen.generate_next_token()
            lat.append(time.perf_counter() - start)
        toks = [int(t) for t in gen.get_sequence(0)][len(prompt):len(prompt) + steps]
        return DecodeRun(prefill, lat, toks)
    return run


SYSTEMS = {"ours": ours, "eager": eager, "genai": genai}


def build_ours(model_dir: Path, recipe: str, fmt: str, out: Path) -> Path:
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile

    bundle = out / f"{model_dir.name}-{fmt}-{recipe}.eaigc"
    if not bundle.is_file():
        profile = get_profile("rpi5" if fmt == "tflite" else "x86-avx2")
        convert(str(model_dir), [profile], bundle, ConvertOptions(recipe=recipe, format=fmt, allow_degraded=True))
    return bundle


def build_genai(model_dir: Path, precision: str, out: Path) -> Path:
    import subprocess
    import sys

    target = out / f"{model_dir.name}-genai-{precision}"
    if not (target / "genai_config.json").is_file():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir),
                        "-o", str(target), "-p", precision, "-e", "cpu"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return target


def _interleaved(fns: dict[str, Callable], prompt: list[int], steps: int, repeats: int,
                 progress) -> dict[str, tuple[DecodeRun, list[float]]]:
    """Each repeat runs every system once, round robin, so a noisy spell on this shared
    machine hits all of them rather than one; every other repeat goes in reverse order, so
    no system always runs first. A pause before each run lets the previous system's worker
    threads (ONNX Runtime's and OpenMP's spin-wait after work) go idle. Returns per system
    the median run (per position) and each repeat's tokens/s."""
    for fn in fns.values():
        fn(prompt, 4)  # warm-up
    runs: dict[str, list[DecodeRun]] = {label: [] for label in fns}
    order = list(fns.items())
    for rep in range(repeats):
        for label, fn in (order if rep % 2 == 0 else order[::-1]):
            time.sleep(SETTLE_S)
            runs[label].append(fn(prompt, steps))
        progress(f"repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{label} {r[-1].tokens_per_s:.0f}" for label, r in runs.items()) + " tokens/s")
    return {label: (DecodeRun(median([r.prefill_s for r in rs]),
                              [median([r.step_s[i] for r in rs]) for i in range(steps)], rs[0].tokens),
                    [r.tokens_per_s for r in rs])
            for label, rs in runs.items()}


def paired_ratio(results: dict, a: str, b: str) -> float | None:
    """Median over repeats of a's speed / b's in the same repeat (run moments apart), which
    cancels most of this machine's slow drifts; the ratio of medians where runs are missing."""
    ra, rb = results.get(a, {}), results.get(b, {})
    if ra.get("runs_tokens_per_s") and rb.get("runs_tokens_per_s"):
        return median([x / y for x, y in zip(ra["runs_tokens_per_s"], rb["runs_tokens_per_s"])])
    return ra["tokens_per_s"] / rb["tokens_per_s"] if ra.get("tokens_per_s") and rb.get("tokens_per_s") else None


def _at(lat: list[float], position: int, half: int = 8) -> float:
    """Per-token latency around ``position``: the median of the steps within ``half`` of it
    (17 steps; one step's median over the repeats is still noisy on this machine)."""
    i = position - PROMPT_TOKENS
    return median(lat[max(i - half, 0):i + half + 1]) if 0 <= i < len(lat) + half else float("nan")


def bench_text(model_dir: Path, work: Path, systems: list[tuple[str, str, str]], steps: int,
               repeats: int, progress=print) -> tuple[Report, dict]:
    """``systems``: (label, kind, precision/format) e.g. ("ours onnx int8", "ours", "onnx:int8-dynamic")."""
    prompt = _prompt(model_dir)
    curves, results, fns = {}, {}, {}
    for label, kind, spec in systems:
        progress(f"text {model_dir.name}: loading {label} …")
        if kind == "ours":
            fmt, recipe = spec.split(":")
            fns[label] = ours(build_ours(model_dir, recipe, fmt, work))
        elif kind == "genai":
            fns[label] = genai(build_genai(model_dir, spec, work))
        else:
            fns[label] = eager(model_dir)
    for label, (run, per_run) in _interleaved(fns, prompt, steps, repeats,
                                              lambda line: progress(f"text {model_dir.name}: {line}")).items():
        curves[label] = run.step_s
        results[label] = {"prefill_ms": run.prefill_s * 1e3, "tokens_per_s": run.tokens_per_s,
                          "runs_tokens_per_s": per_run,
                          "latency_ms_at_16": _at(run.step_s, 16) * 1e3,
                          "latency_ms_at_last": _at(run.step_s, PROMPT_TOKENS + steps - 9) * 1e3,
                          "tokens": run.tokens[:32]}
    report = Report(f"Text decode — {model_dir.name} (prompt {PROMPT_TOKENS} tokens, {steps} greedy steps, "
                    f"median of {repeats}; ratios: median of per-repeat ratios)",
                    ["system", "prefill ms", "decode tok/s", "vs eager", "vs genai (same precision)",
                     "ms/token @16", f"ms/token @{PROMPT_TOKENS + steps - 9}", "@last / @16"])
    for label, r in results.items():
        vs_eager = paired_ratio(results, label, "pytorch eager fp32")
        vs_genai = None if label.startswith("genai") else paired_ratio(results, label, f"genai {label.split()[-1]}")
        report.add(label, r["prefill_ms"], r["tokens_per_s"],
                   f"{vs_eager:.2f}x" if vs_eager else "—", f"{vs_genai:.2f}x" if vs_genai else "—",
                   r["latency_ms_at_16"], r["latency_ms_at_last"],
                   f"{r['latency_ms_at_last'] / r['latency_ms_at_16']:.2f}")
    ref = results.get("ours onnx fp32", {}).get("tokens")
    agree = {k: r["tokens"] == ref for k, r in results.items() if k.endswith("fp32") and ref}
    if agree:
        report.notes.append("greedy tokens at fp32 identical to ours onnx fp32: " +
                            ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in agree.items()))
    return report, {"results": results, "curves": curves, "fp32_agree": agree}
