"""Chat: ``messages`` rendered with the bundle's chat template exactly as transformers'
apply_chat_template does, in jinja2's sandbox; bad conversations are bad requests."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from edge_aigc import Runtime
from edge_aigc.errors import BadRequest, BundleError
from edge_aigc.tasks.text.chat import ChatTemplate

TURNS = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def rt(chat_lm):
    with Runtime([chat_lm[1]], profile="x86-avx2") as runtime:
        yield runtime


def test_messages_render_to_the_ids_transformers_gives_and_generate_the_same(chat_lm, rt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf, _ = chat_lm
    expected = AutoTokenizer.from_pretrained(hf).apply_chat_template(TURNS, add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert rt.model("chatty").task.encode_chat(TURNS) == list(expected)
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([expected]), attention_mask=torch.ones(1, len(expected), dtype=torch.long),
                             max_new_tokens=12, do_sample=False, pad_token_id=0)
    ref = out[0, len(expected):].tolist()
    ref = ref[:ref.index(0)] if 0 in ref else ref
    assert rt.generate("chatty", messages=TURNS, max_new_tokens=12).meta["token_ids"] == ref


@pytest.mark.parametrize("params,why", [
    ({"messages": []}, "expected 1 to 64 messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": 5}]}, "content must be text"),
    ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "exactly 'role' and 'content'"),
    ({"messages": ["hi"]}, "exactly 'role' and 'content'"),
    ({"messages": [{"role": "user", "content": "a\ud800"}]}, "content must be text"),
    ({"messages": TURNS, "prompt": "x"}, "not both"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "the assistant cannot speak first"),
])
def test_a_bad_conversation_is_a_bad_request(rt, params, why):
    with pytest.raises(BadRequest, match=why):
        rt.generate("chatty", **params)


def test_a_template_that_does_not_compile_is_a_bad_bundle():
    with pytest.raises(BundleError, match="chat template does not compile"):
        ChatTemplate("{% for m in messages %}", model="m")


def test_the_template_runs_in_a_sandbox():
    escape = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(BadRequest, match="chat template"):
        escape.render([{"role": "user", "content": "hi"}])


def test_run_chat_answers_each_line_from_standard_input(chat_lm):
    _, bundle = chat_lm
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "run", str(bundle), "--chat", "--system", "Be brief.",
                          "--max-new-tokens", "6"], input="Once upon a time\nThe quick brown fox\n\n",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.strip()]) >= 1
    with Runtime([bundle], profile="x86-avx2") as rt:
        first = rt.generate("chatty", messages=[{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "Once upon a time"}],
                            max_new_tokens=6).text
    assert out.stdout.startswith(first)
