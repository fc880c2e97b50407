"""Output held to a JSON schema on every engine: a tiny model that would otherwise write prose
answers JSON that parses and fits the schema, greedy or sampled, with speculation giving the
same answer as plain decoding; a schema the compiler cannot honour is refused by name."""
from __future__ import annotations

import json

import pytest

from edge_aigc import Runtime
from edge_aigc.errors import BadRequest
from tests.unit.tasks.conftest import ENGINES

CALL = {"type": "object", "additionalProperties": False, "required": ["name", "arguments"], "properties": {
    "name": {"enum": ["HassTurnOn", "HassTurnOff", "HassLightSet"]},
    "arguments": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        "name": {"type": "string", "maxLength": 12}, "brightness": {"type": "integer", "minimum": 0, "maximum": 100}}}}}
PROMPT = "Turn on the kitchen lights. Answer:"


@pytest.fixture(scope="module")
def rt(engine_bundles):
    with Runtime(engine_bundles, "x86-avx2") as runtime:
        yield runtime


def fits(value) -> bool:
    args = value["arguments"]
    return (set(value) == {"name", "arguments"} and value["name"] in CALL["properties"]["name"]["enum"]
            and set(args) <= {"name", "brightness"} and isinstance(args["name"], str) and len(args["name"]) <= 12
            and (isinstance(args.get("brightness", 0), int) and 0 <= args.get("brightness", 0) <= 100))


@pytest.mark.parametrize("model", ENGINES)
def test_the_answer_parses_and_fits_greedy_and_sampled(rt, model):
    plain = rt.generate(model, prompt=PROMPT, temperature=0.0, max_new_tokens=48).text
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain)  # unconstrained, the tiny model writes no JSON
    for params in ({"temperature": 0.0}, {"temperature": 1.0, "seed": 7}, {"temperature": 1.3, "top_k": 0, "seed": 3}):
        result = rt.generate(model, prompt=PROMPT, json_schema=CALL, max_new_tokens=96, **params)
        assert result.meta["finish_reason"] == "eos", result.text
        assert fits(json.loads(result.text)), result.text


@pytest.mark.parametrize("model", ENGINES)
def test_speculation_under_a_schema_gives_the_plain_answer(rt, model):
    prompt = 'Copy: {"name": "HassTurnOn", "arguments": {"name": "kitchen"}} Copy:'
    answers = {mode: rt.generate(model, prompt=prompt, json_schema=CALL, temperature=0.0, max_new_tokens=96,
                                 speculation=mode).text for mode in ("off", "on")}
    assert answers["on"] == answers["off"] and fits(json.loads(answers["off"]))


def test_the_same_seed_samples_the_same_json(rt):
    ask = dict(prompt=PROMPT, json_schema=CALL, temperature=1.0, seed=11, max_new_tokens=96)
    assert rt.generate("fused", **ask).text == rt.generate("fused", **ask).text


def test_a_small_object_schema_is_kept(rt):
    result = rt.generate("fused", prompt=PROMPT, json_schema={"type": "object", "properties": {
        "ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}, temperature=0.0)
    assert isinstance(json.loads(result.text)["ok"], bool)


@pytest.mark.parametrize("schema,words", [
    ({"type": "object", "dependentSchemas": {"a": {}}}, "dependentSchemas"),
    ({"type": "strange"}, "strange"),
    ({"$ref": "#/$defs/missing"}, "missing"),
])
def test_a_schema_it_cannot_honour_is_refused_by_name(rt, schema, words):
    with pytest.raises(BadRequest, match=words):
        rt.generate("fused", prompt=PROMPT, json_schema=schema, max_new_tokens=4)


def test_a_schema_is_a_json_object_of_bounded_size_and_not_for_beams(rt):
    with pytest.raises(BadRequest, match="expected dict"):
        rt.generate("fused", prompt=PROMPT, json_schema="json")
    with pytest.raises(BadRequest, match="over 16384 bytes"):
        rt.generate("fused", prompt=PROMPT, json_schema={"enum": ["x" * 17000]})
    with pytest.raises(BadRequest, match="not with beam search"):
        rt.generate("fused", prompt=PROMPT, json_schema=CALL, num_beams=2)
