"""Constrained decoding libraries, measured for the choice #43 asks for: the cost of compiling a
Home-Assistant-style tool-call schema and of each token's mask, on SmolLM2's 49,152-token
vocabulary (the zoo bundle's tokenizer.json), on this CPU.

    edge-aigc bench --only constrain

Candidates that a device may install (no torch, no transformers): llguidance (MIT) and
outlines-core (Apache-2.0). xgrammar is out: its wheel requires torch and transformers.
llguidance computes each mask lazily from the grammar (compile is cheap, each step costs);
outlines-core builds a whole token index from the schema's regular expression up front
(compile costs, each step is a lookup). Home Assistant sends its tool list with every
request, so both costs count per request: the figures are compile time, the median and p99
mask time over a forced valid answer, and the answer's total (compile + all its masks).
Each library is installed the first time into a venv of its own under the cache, so the
project's environment needs neither.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from converters.cache import cache_root

from .common import Report

__all__ = ["bench_constrain", "SCHEMA", "ANSWER", "LIBRARIES"]

LIBRARIES = {"llguidance": "llguidance==1.9.1", "outlines-core": "outlines-core==0.2.14"}
ZOO = Path(__file__).parent.parent / "edge_aigc" / "zoo" / "smollm2-135m-x86-avx2.eaigc"
# one call of one of Home Assistant's intents, with the entity copied from the request
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "arguments"], "properties": {
    "name": {"enum": ["HassTurnOn", "HassTurnOff", "HassLightSet", "HassClimateSetTemperature",
                      "HassStartTimer", "HassMediaPause", "HassSetPosition"]},
    "arguments": {"type": "object", "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "area": {"type": "string"}, "domain": {"type": "array", "items": {"type": "string"}},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100}}}}}
# compact, as the device writes JSON (no optional whitespace: fewer tokens)
ANSWER = '{"name":"HassLightSet","arguments":{"name":"kitchen ceiling lights","area":"kitchen","brightness":40}}'

# Runs in the library's own venv: prints one JSON line of figures.
_PROBE = r'''
import json, sys, time
tokenizer_path, schema, answer, rounds = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
vocab = json.load(open(tokenizer_path))
def stats(xs):
    xs = sorted(xs); return xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))]
if sys.argv[5] == "llguidance":
    import llguidance as lg
    tok = lg.LLTokenizer(tokenizer_path)
    ids = tok.tokenize_str(answer)
    compiles, masks = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        m = lg.LLMatcher(tok, lg.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False}))
        compiles.append(time.perf_counter() - t)
        assert not m.is_error(), m.get_error()
        for i in ids:
            t = time.perf_counter(); mask = m.compute_bitmask(); masks.append(time.perf_counter() - t)
            assert mask[i // 8] >> (i % 8) & 1, f"token {i} refused"
            assert m.consume_token(i)
        assert m.is_accepting()
else:
    import outlines_core as oc
    model = vocab["model"]["vocab"]
    eos = next(t["id"] for t in vocab["added_tokens"] if t["content"] == "<|endoftext|>")
    # GPT-2 byte-level strings to their bytes, as outlines-core's own from_pretrained does
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256)); cs = bs[:]; n = 0
    for b in range(256):
        if b not in bs: bs.append(b); cs.append(256 + n); n += 1
    unbyte = {chr(c): b for b, c in zip(bs, cs)}
    tokens = {}
    for text, i in model.items():
        if i != eos:
            tokens.setdefault(bytes(unbyte[ch] for ch in text), []).append(i)
    vocabulary = oc.Vocabulary(eos, tokens)
    regex = oc.json_schema.build_regex_from_schema(json.dumps(schema), r"[ ]?")
    ids = [model[t] for t in json.loads(sys.argv[6])]
    compiles, masks = [], []
    for _ in range(rounds):
        t = time.perf_counter(); index = oc.Index(regex, vocabulary); compiles.append(time.perf_counter() - t)
        guide = oc.Guide(index)
        for i in ids:
            t = time.perf_counter(); allowed = guide.get_tokens(); masks.append(time.perf_counter() - t)
            assert i in allowed, f"token {i} refused"
            guide.advance(i)
c50, c99 = stats(compiles); m50, m99 = stats(masks)
print(json.dumps({"compile_s": c50, "mask_ms": m50 * 1e3, "mask_p99_ms": m99 * 1e3, "tokens": len(ids),
                  "answer_s": c50 + m50 * len(ids)}))
'''


def _venv(name: str, progress) -> Path:
    home = cache_root() / "constrain" / LIBRARIES[name].replace("==", "-")
    if not (home / ".installed").exists():
        progress(f"constrain: installing {LIBRARIES[name]} into {home}")
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", LIBRARIES[name]], check=True)
        (home / ".installed").touch()
    return home / "bin" / "python"


def bench_constrain(rounds: int, progress=print) -> tuple[Report, dict]:
    from tokenizers import Tokenizer

    report = Report("Constrained decoding: a tool-call schema on SmolLM2's 49,152-token vocabulary",
                    ["library", "compile ms", "mask ms (median)", "mask ms (p99)", "answer tokens",
                     "compile + masks of one answer ms"])
    data: dict = {"schema": SCHEMA, "answer": ANSWER, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="edge-aigc-constrain-") as tmp, tarfile.open(ZOO) as bundle:
        path = Path(tmp) / "tokenizer.json"
        path.write_bytes(bundle.extractfile("tokenizer.json").read())
        pieces = Tokenizer.from_file(str(path)).encode(ANSWER, add_special_tokens=False).tokens
        for name in LIBRARIES:
            python = _venv(name, progress)
            out = subprocess.run([str(python), "-c", _PROBE, str(path), json.dumps(SCHEMA), ANSWER, str(rounds), name,
                                  json.dumps(pieces)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"{name}: {out.stderr.strip().splitlines()[-1:]}")
            f = json.loads(out.stdout.strip().splitlines()[-1])
            data[name] = f
            report.add(name, round(f["compile_s"] * 1e3, 2), round(f["mask_ms"], 3), round(f["mask_p99_ms"], 3),
                       f["tokens"], round(f["answer_s"] * 1e3, 1))
            progress(f"constrain: {name} done")
    report.notes.append(f"medians of {rounds} compiles; masks over every token of the forced answer in each round; "
                        "one process per library, one thread")
    return report, data
