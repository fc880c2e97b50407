"""The language-model gate: real text, known answers, greedy agreement against fp32."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converters.gate import text_gate
from converters.export.onnx import export_onnx
from converters.sources.load import load_source
from converters.gate.text_gate import GREEDY_TOKENS, LmRun, compare, gate_inputs
from converters.gate.validate import Reference, evaluate
from edge_aigc.errors import ConversionError
from tests.helpers.tiny_lm import save_tiny_lm

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained tiny Llama, its source and fp32 reference export."""
    work = tmp_path_factory.mktemp("gate")
    source = load_source(str(save_tiny_lm(work / "lm", hidden=96, ffn=256, steps=120, gate_text=True)))
    return source, export_onnx(source, work / "fp32.onnx").path


def run(greedy: list[list[int]], right: list[bool], logits: np.ndarray | None = None) -> LmRun:
    logits = np.log(np.full((4, 8), 1 / 8)) if logits is None else logits
    return LmRun(logits, np.array([0, 1, 2, 3]), greedy, right)


def test_identical_runs_agree_fully():
    a = run([[1, 2, 3], [4, 5]], [True, False])
    m = compare(a, a)
    assert m["ppl_ratio"] == 1 and m["greedy_agreement"] == 1 and m["answers_kept"] == 1
    assert m["median_divergence"] == GREEDY_TOKENS and m["perplexity"] == pytest.approx(8.0)
    assert m["top1_agreement"] == 1 and m["mean_kl"] == pytest.approx(0, abs=1e-9)


def test_lost_answers_and_divergence_are_counted():
    ref = run([[1, 2, 3, 4], [4, 5, 6], [7, 8], [9]], [True, True, False, True])
    out = run([[1, 2, 9, 9], [4, 5, 6], [7, 1], [9]], [True, False, True, True])
    m = compare(ref, out, budget=4)
    assert m["greedy_agreement"] == 0.5
    assert m["answers_kept"] == pytest.approx(2 / 3)   # one of fp32's three right answers lost
    assert m["answers_right"] == 3                      # a new right answer does not make up for it
    assert m["median_divergence"] == pytest.approx(3.0)  # divergences 2, 4, 1, 4


def test_answers_kept_is_one_when_fp32_knows_none():
    assert compare(run([[1]], [False]), run([[2]], [False]))["answers_kept"] == 1.0


def test_worse_logits_raise_the_perplexity_ratio():
    sharp = np.full((4, 8), -10.0)
    sharp[np.arange(4), [0, 1, 2, 3]] = 0.0
    assert compare(run([[1]], [True], sharp), run([[1]], [True]))["ppl_ratio"] > 5


@pytest.mark.parametrize("text,answers,right", [
    ("The capital of France is Paris.", ("Paris",), True),
    ("PARIS, of course", ("Paris",), True),
    ("2 + 2 = 40", ("4", "four"), False),
    ("It is four.", ("4", "four"), True),
    ("chatter", ("chat",), False),
    ("Guten Morgen!", ("guten morgen",), True),
    ("Parisian", ("Paris",), False),
])
def test_answers_count_as_whole_words_ignoring_case(text, answers, right):
    assert text_gate.is_right(text, answers) is right


def test_inputs_use_the_chat_template_and_fit_the_context(tiny):
    source, _ = tiny
    plain = gate_inputs(source, context=256)
    assert len(plain.windows) == 8 and {len(w) for w in plain.windows} == {256}
    assert len(plain.prompts) == len(plain.answers) > 40
    assert plain.budget == GREEDY_TOKENS
    assert source.tokenizer.decode(plain.prompts[0]).startswith("Question: What is the capital of France?")
    source.task_config["chat_template"] = CHATML
    try:
        chat = gate_inputs(source, context=128)
    finally:
        del source.task_config["chat_template"]
    assert {len(w) for w in chat.windows} == {128} and chat.budget == 32
    assert "<|im_start|>assistant" in source.tokenizer.decode(chat.prompts[0])
    assert all(len(p) + chat.budget <= 128 for p in chat.prompts)
    with pytest.raises(ConversionError, match="context of 16 tokens holds none"):
        gate_inputs(source, context=16)


def test_missing_gate_text_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(ConversionError, match="reads real text from .*missing"):
        gate_inputs(tiny[0], 256, tmp_path / "no-such-text")


def test_the_fp32_export_passes_and_a_damaged_copy_fails(tiny, tmp_path):
    source, fp32 = tiny
    reference = Reference(source, fp32)
    same = evaluate(reference, "fp32", fp32)
    assert same.passed, same.summary()
    assert same.metrics["greedy_agreement"] == 1 and same.metrics["ppl_ratio"] == pytest.approx(1)
    assert "GPL-3" in same.inputs and "questions" in same.inputs
    model = onnx.load(str(fp32))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:  # 30% noise on every matrix: a broken quantizer
        w = numpy_helper.to_array(init)
        if w.ndim == 2 and w.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(w + 0.3 * w.std() * rng.standard_normal(w.shape).astype(np.float32),
                                                  init.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    report = evaluate(reference, "int8-dynamic", damaged)
    assert not report.passed and any(f.startswith("ppl_ratio") for f in report.failures), report.summary()
