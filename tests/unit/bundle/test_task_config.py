"""task_config has a typed schema per task, checked when a bundle loads and when a source is read."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from converters.sources.load import load_source
from tests.helpers import bundle_meta
from edge_aigc import load_bundle, pack_bundle
from edge_aigc.bundle.archive import write_archive
from edge_aigc.bundle.load import inspect_bundle
from edge_aigc.errors import BundleError, SourceError
from edge_aigc.bundle.task_config import AudioConfig, ImageConfig, SpeechConfig, TextConfig, parse_task_config
from edge_aigc.zoo import zoo_bundles
from tests.helpers.tiny_models import tiny_dcgan

TEXT = {"vocab_size": 100, "max_context": 64, "num_layers": 2, "num_kv_heads": 2, "head_dim": 16}


def test_every_shipped_bundle_parses_into_its_tasks_schema():
    kinds = {"text-generation": TextConfig, "image-generation": ImageConfig, "audio-generation": AudioConfig,
             "speech-synthesis": SpeechConfig}
    for zb in zoo_bundles():
        m = inspect_bundle(zb.path).manifest
        assert isinstance(m.config, kinds[m.task]), zb.path.name


@pytest.mark.parametrize("raw,key,why", [
    ({**TEXT, "colour": "red"}, "colour", "unknown key"),
    ({k: v for k, v in TEXT.items() if k != "head_dim"}, "head_dim", "missing"),
    ({**TEXT, "num_layers": "2"}, "num_layers", "expected int, got str"),
    ({**TEXT, "num_layers": True}, "num_layers", "got bool"),
    ({**TEXT, "kv_layout": "paged"}, "kv_layout", "unknown kv_layout"),
    ({**TEXT, "eos_token_id": ["a"]}, "eos_token_id", "token ids"),
])
def test_a_wrong_text_config_names_the_key(raw, key, why):
    with pytest.raises(BundleError, match=rf"task_config\.{key}'.*{why}"):
        parse_task_config("text-generation", raw)


def test_one_eos_id_or_several_read_the_same_way():
    assert parse_task_config("text-generation", {**TEXT, "eos_token_id": 3}).eos_token_id == (3,)
    assert parse_task_config("text-generation", {**TEXT, "eos_token_id": [3, 4]}).eos_token_id == (3, 4)
    assert parse_task_config("text-generation", {**TEXT, "eos_token_id": None}).eos_token_id == ()


def test_audio_needs_its_sample_rate():
    with pytest.raises(BundleError, match=r"task_config\.sample_rate'.*missing"):
        parse_task_config("audio-generation", {"hop_length": 80})


VOICE = {"sample_rate": 22050, "espeak_voice": "en-us", "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}}


@pytest.mark.parametrize("raw,key,why", [
    ({k: v for k, v in VOICE.items() if k != "espeak_voice"}, "espeak_voice", "missing"),
    ({**VOICE, "phoneme_id_map": {"a": 3}}, "phoneme_id_map", "phoneme -> \\[id"),
    ({**VOICE, "speaker_id_map": {"bob": 1}}, "speaker_id_map", "id in \\[0, 1\\)"),
    ({**VOICE, "noise_inputs": {"noise_0": [2, "seconds"]}}, "noise_inputs.noise_0", "channels"),
    ({**VOICE, "max_chars": 0}, "max_chars", "at least 1"),
])
def test_a_wrong_speech_config_names_the_key(raw, key, why):
    with pytest.raises(BundleError, match=rf"task_config\.{key}'.*{why}"):
        parse_task_config("speech-synthesis", raw)


def test_a_bundle_with_an_unknown_task_config_key_is_refused_when_it_loads(tmp_path):
    model = b"\x00" * 64
    manifest = {**bundle_meta(), "task_config": {"class_labels": ["a"], "clases": ["b"]}, "schema": 1,
                "files": {"model.onnx": hashlib.sha256(model).hexdigest()}, "size_bytes": len(model)}
    with pytest.raises(BundleError, match=r"task_config\.clases'"):
        pack_bundle(tmp_path / "refused.eaigc", manifest, {"model.onnx": model})  # the packer checks too
    path = tmp_path / "hand-made.eaigc"
    write_archive(path, [("manifest.json", json.dumps(manifest).encode()), ("model.onnx", model)])
    with pytest.raises(BundleError, match=r"task_config\.clases'.*unknown key"):
        load_bundle(path)


def typo_dcgan():
    gen = tiny_dcgan()
    return replace(gen, task_config={**gen.task_config, "num_clases": 4})


def test_a_source_with_a_typo_in_its_task_config_fails_before_any_work():
    with pytest.raises(SourceError, match=r"task_config\.num_clases'.*unknown key"):
        load_source("tests.unit.bundle.test_task_config:typo_dcgan")
