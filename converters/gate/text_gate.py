"""The language-model gate: real text and real questions, the fp32 export as the reference.

Grading an LM on random token ids says little about a trained model: an int8 SmolLM2 agreed
with fp32 on 92% of next tokens there and still answered "What is the capital of France?"
with something other than Paris. So a text artifact is graded on what its users give it:

- **Text**: the GNU GPL v3 as Debian ships it (``/usr/share/common-licenses/GPL-3``, in
  ``base-files``, so on every Debian and Ubuntu system); its first 2,048 tokens cut into
  windows of 512 (or the model's context), the second half of each window scored, as
  llama.cpp's ``llama-perplexity`` does, so the figures compare with its.
- **Questions**: ``gate_prompts.json`` beside this file, 52 questions with short known
  answers (capitals, arithmetic, translations, facts, completions), each asked as one user
  turn through the model's chat template (``Question: …\\nAnswer:`` without one) and
  answered greedily, 32 tokens at most.

Both models run through the device's own decode loop for their format
(``edge_aigc.tasks.text.task.make_kv_loop``, opened by ``validate``), so the gate grades what the device will run.

| metric | meaning |
|---|---|
| ``ppl_ratio`` | the artifact's perplexity on the text ÷ fp32's |
| ``greedy_agreement`` | share of questions whose first 32 greedy tokens equal fp32's |
| ``answers_kept`` | share of the questions fp32 answers right that the artifact answers right (1 when fp32 gets none) |
| ``median_divergence`` | median index of the first greedy token that differs from fp32's (32: none differs) |
| ``top1_agreement``, ``mean_kl`` | next-token agreement and KL(fp32 ‖ artifact) on the scored text |
| ``perplexity``, ``answers_right`` | the artifact's own perplexity and count of right answers |
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edge_aigc.contract import Task
from edge_aigc.errors import ConversionError
from edge_aigc.bundle.task_config import parse_task_config
from edge_aigc.tasks.text.chat import ChatTemplate
from edge_aigc.tasks.text.sampling import log_softmax
from edge_aigc.tasks.base import DecodeLoop

from . import metrics
from ..sources.types import Source

__all__ = ["GATE_TEXT", "PROMPTS", "GateInputs", "LmRun", "gate_inputs", "answers_kept", "is_right", "run_lm", "compare"]

GATE_TEXT = Path("/usr/share/common-licenses/GPL-3")
PROMPTS = Path(__file__).parents[1] / "gate_prompts.json"
TEXT_TOKENS, WINDOW, GREEDY_TOKENS = 2048, 512, 32


@dataclass(frozen=True)
class GateInputs:
    windows: list[np.ndarray]           # token ids, one row per perplexity window
    prompts: list[list[int]]            # token ids of each question, rendered
    answers: list[tuple[str, ...]]      # what counts as right, per question
    eos: frozenset[int]
    budget: int                         # greedy tokens per question
    text: str                           # where the windows come from

    def describe(self) -> str:
        return (f"{sum(map(len, self.windows)):,} tokens of {self.text} in {len(self.windows)} windows, "
                f"{len(self.prompts)} questions")


@dataclass(frozen=True)
class LmRun:
    """What one model did on the gate's inputs."""
    logits: np.ndarray                  # [scored positions, vocab] on the text
    targets: np.ndarray                 # the text's next tokens at those positions
    greedy: list[list[int]]             # greedy continuation per question (eos included)
    right: list[bool]                   # per question: a known answer in the continuation

    @cached_property
    def perplexity(self) -> float:
        logp = log_softmax(self.logits)[np.arange(len(self.targets)), self.targets]
        return float(np.exp(-np.mean(logp.astype(np.float64))))


def _gate_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise ConversionError(f"the text model gate reads real text from {path} (Debian's base-files); "
                              "it is missing on this host") from None


def gate_inputs(source: Source, context: int, text_path: Path = GATE_TEXT) -> GateInputs:
    """The gate's token ids for this source's tokenizer; ``context`` is the longest
    sequence the artifacts take (the model's, or a fixed TFLite cache)."""
    if source.tokenizer is None:
        raise ConversionError(f"{source.name}: a text model needs its tokenizer to be graded")
    cfg = parse_task_config(Task.TEXT, source.task_config)
    tok = source.tokenizer
    ids = tok.encode(_gate_text(text_path)).ids[:TEXT_TOKENS]
    window = min(WINDOW, context, len(ids))
    windows = [np.array(ids[i:i + window], np.int64) for i in range(0, len(ids) - window + 1, window)]
    chat = ChatTemplate.for_model(cfg, tok, source.name)
    budget = min(GREEDY_TOKENS, context // 4)
    prompts, answers = [], []
    for item in json.loads(PROMPTS.read_text(encoding="utf-8"))["prompts"]:
        if chat is not None:
            rendered = tok.encode(chat.render([{"role": "user", "content": item["question"]}]),
                                  add_special_tokens=False).ids
        else:
            rendered = tok.encode(f"Question: {item['question']}\nAnswer:").ids
        if rendered and len(rendered) + budget <= context:
            prompts.append(rendered)
            answers.append(tuple(item["answers"]))
    if not prompts:
        raise ConversionError(f"{source.name}: a context of {context} tokens holds none of the gate's questions "
                              f"with {budget} tokens to answer")
    return GateInputs(windows, prompts, answers, frozenset(cfg.eos_token_id), budget, text_path.name)


def is_right(text: str, answers: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text, re.IGNORECASE) for a in answers)


def run_lm(source: Source, loop: DecodeLoop, inputs: GateInputs) -> LmRun:
    """Run a model through ``loop`` (the device's decode loop for its artifact) on the gate's inputs."""
    logits, targets = [], []
    for window in inputs.windows:
        out = loop.step(loop.start(1), window[None])[0]
        half = len(window) // 2
        logits.append(out[half - 1:-1])
        targets.append(window[half:])
    greedy, right = [], []
    for ids, answers in zip(inputs.prompts, inputs.answers):
        state = loop.start(1)
        step = loop.step(state, np.array([ids], np.int64), last_only=True)[0, -1]
        tokens: list[int] = []
        while len(tokens) < inputs.budget:
            tokens.append(int(np.argmax(step)))
            if tokens[-1] in inputs.eos or len(tokens) == inputs.budget:
                break
            step = loop.step(state, np.array([[tokens[-1]]], np.int64))[0, -1]
        greedy.append(tokens)
        right.append(is_right(source.tokenizer.decode(tokens, skip_special_tokens=True), answers))
    return LmRun(np.concatenate(logits), np.concatenate(targets), greedy, right)


def _divergence(a: list[int], b: list[int], budget: int) -> int:
    if a == b:
        return budget
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def answers_kept(ref: list[bool], out: list[bool]) -> float:
    """Share of the questions ``ref`` answers right that ``out`` answers right too (1 when none)."""
    kept = [o for r, o in zip(ref, out) if r]
    return float(np.mean(kept)) if kept else 1.0


def compare(ref: LmRun, out: LmRun, budget: int = GREEDY_TOKENS) -> dict[str, float]:
    """The gate's metrics for ``out`` against the fp32 ``ref`` (the module doc's table)."""
    return {
        "ppl_ratio": out.perplexity / ref.perplexity,
        "greedy_agreement": float(np.mean([a == b for a, b in zip(ref.greedy, out.greedy)])),
        "answers_kept": answers_kept(ref.right, out.right),
        "median_divergence": float(np.median([_divergence(a, b, budget) for a, b in zip(ref.greedy, out.greedy)])),
        "top1_agreement": metrics.top1_agreement(ref.logits, out.logits),
        "mean_kl": metrics.mean_kl(ref.logits, out.logits),
        "perplexity": out.perplexity,
        "answers_right": float(sum(out.right)),
    }


def loop(source: Source, path: Path, fmt: str, task_config: dict) -> DecodeLoop:
    """The decode loop the device would run on the artifact at ``path``."""
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text.task import make_kv_loop

    return make_kv_loop(open_session(fmt, path, None, source.name), task_config)


def context(lm: DecodeLoop, task_config: dict) -> int:
    return min(int(task_config["max_context"]), lm.cache_length)


def measure(reference, candidate: Path, fmt: str, task_config: dict) -> tuple[dict[str, float], int, str]:
    """The text task's measure (its GateSpec's): the candidate's loop on the gate's inputs for
    its context, against fp32's run on the same (``reference.text``, validate.Reference)."""
    lm = loop(reference.source, candidate, fmt, task_config)
    inputs, ref = reference.text(context(lm, task_config))
    return compare(ref, run_lm(reference.source, lm, inputs), inputs.budget), len(inputs.prompts), inputs.describe()
