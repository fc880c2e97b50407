"""Device profiles: the packaged set is valid; every kind of mistake names file and key."""
from __future__ import annotations

import re

import pytest

from edge_aigc.device.detect import MachineFacts, detect_profile, rank_profiles
from edge_aigc.errors import ProfileError
from edge_aigc.device.profiles import get_profile, list_profiles, load_profile
from tests.helpers import ROOT

REQUIRED = {"jetson-orin-nano", "rpi5", "rpi4", "rpi-zero-2w", "x86-avx2", "x86-avx512-vnni"}
RPI5 = (ROOT / "device_profiles" / "rpi5.toml").read_text()


def test_packaged_profiles_include_the_required_devices_and_all_validate():
    profiles = {p.name: p for p in list_profiles()}
    assert REQUIRED <= set(profiles)
    assert profiles["rpi-zero-2w"].memory_mb == 512
    jetson = profiles["jetson-orin-nano"]
    assert jetson.onnx.providers[0] == "TensorrtExecutionProvider" and jetson.onnx.recipe == "fp16"
    for p in profiles.values():
        assert p.budget.max_rss_mb <= p.memory_mb
        assert p.recipe_for(p.preferred_format)


def write_profile(tmp_path, text, name="rpi5"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def edited(old, new):
    assert old in RPI5, old
    return RPI5.replace(old, new, 1)


@pytest.mark.parametrize("text,key,why", [
    ('colour = "red"\n' + RPI5, "colour", "unknown key"),
    (RPI5 + 'colour = "red"\n', "budget.colour", "unknown key"),
    (edited("[onnx]\n", "[onnx]\nprovider = 'x'\n"), "onnx.provider", "unknown key"),
    (edited('cpu = "Cortex-A76"\n', ""), "cpu", "missing"),
    (edited("threads = 4\n\n[tflite]", "\n[tflite]"), "onnx.threads", "missing"),
    (edited("max_rss_mb = 1536", "max_rss_mb = 99999"), "budget.max_rss_mb", "out of range"),
    (edited("[onnx]\nproviders = [\"CPUExecutionProvider\"]\nrecipe = \"int8-dynamic\"\nthreads = 4",
            "[onnx]\nproviders = [\"CPUExecutionProvider\"]\nrecipe = \"int8-dynamic\"\nthreads = 16"),
     "onnx.threads", "out of range"),
    (edited('recipe = "int8-dynamic"', 'recipe = "int3"'), "onnx.recipe", "not one of"),
    (edited("threads = 4\n\n[tflite]", "threads = 4\ndynamic_block_base = 65\n\n[tflite]"),
     "onnx.dynamic_block_base", "out of range"),
    (edited("threads = 4\n\n[tflite]", "threads = 4\ndynamic_block_base = -1\n\n[tflite]"),
     "onnx.dynamic_block_base", "out of range"),
    (edited('arch = "aarch64"', 'arch = "riscv64"'), "arch", "not one of"),
    (edited("cores = 4", 'cores = "four"'), "cores", "expected int"),
    (edited("cores = 4", "cores = true"), "cores", "expected int"),
    (edited('formats = ["onnx", "tflite", "gguf"]', 'formats = ["onnx", "pytorch"]'), "formats", "not one of"),
    (edited('formats = ["onnx", "tflite", "gguf"]', "formats = []"), "formats", "must not be empty"),
    (edited('providers = ["CPUExecutionProvider"]', 'providers = ["CUDAExecutionProvider"]'),
     "onnx.providers", "CPUExecutionProvider"),
    (edited('providers = ["CPUExecutionProvider"]', 'providers = ["CpuExecutionProvider"]'),
     "onnx.providers", "not one of"),
    (edited('name = "rpi5"', 'name = "rpi6"'), "name", "must match the file name"),
    (edited('speech-synthesis = "fp32"', 'speech = "fp32"'), "onnx.task_recipes.speech", "not a task"),
    (edited('speech-synthesis = "fp32"', 'audio-generation = "fp8"'),
     "onnx.task_recipes.audio-generation", "not one of"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_invalid_profile_error_names_the_file_and_the_key(tmp_path, text, key, why):
    path = write_profile(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert f"key '{key}'" in message and why in message, message


def test_task_recipes_override_the_format_recipe_for_their_task_only(tmp_path):
    path = write_profile(tmp_path, edited('speech-synthesis = "fp32"', 'audio-generation = "fp32"'))
    p = load_profile(path)
    assert p.recipe_for("onnx", "audio-generation") == "fp32"
    assert load_profile(write_profile(tmp_path, RPI5)).recipe_for("onnx", "speech-synthesis") == "fp32"
    assert p.recipe_for("onnx", "image-generation") == p.recipe_for("onnx") == "int8-dynamic"
    assert p.recipe_for("tflite", "audio-generation") == p.tflite.recipe


def test_missing_section_for_a_listed_format_is_an_error(tmp_path):
    text = RPI5[: RPI5.index("[tflite]")] + RPI5[RPI5.index("[budget]"):]
    with pytest.raises(ProfileError, match=r"key 'tflite': missing \(required table\)"):
        load_profile(write_profile(tmp_path, text))


def test_profile_that_is_not_toml_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(write_profile(tmp_path, "name = [unclosed\n"))


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match=re.escape("unknown profile 'rpi9'") + ".*rpi5"):
        get_profile("rpi9")


def test_profiles_in_an_extra_directory_shadow_packaged_ones(tmp_path, monkeypatch):
    write_profile(tmp_path, edited("memory_mb = 4096", "memory_mb = 8192"))
    monkeypatch.setenv("EDGE_AIGC_PROFILES", str(tmp_path))
    assert get_profile("rpi5").memory_mb == 8192
    assert len(list_profiles()) >= 6


def machine(arch="x86_64", isa=(), memory_mb=16000, cores=4, providers=("CPUExecutionProvider",),
            board=""):
    return MachineFacts(arch=arch, cpu="test", cores=cores, memory_mb=memory_mb,
                        isa=frozenset(isa), providers=providers, board=board)


@pytest.mark.parametrize("facts,expected", [
    (machine(isa=["avx2", "fma", "f16c"]), "x86-avx2"),
    (machine(isa=["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"],
             cores=8), "x86-avx512-vnni"),
    (machine("aarch64", ["asimd", "asimddp", "asimdhp", "fphp"], 8000,
             board="Raspberry Pi 5 Model B Rev 1.0"), "rpi5"),
    (machine("aarch64", ["asimd"], 3800, board="Raspberry Pi 4 Model B Rev 1.4"), "rpi4"),
    (machine("aarch64", ["asimd"], 430, board="Raspberry Pi Zero 2 W Rev 1.0"), "rpi-zero-2w"),
    (machine("aarch64", ["asimd", "asimddp", "asimdhp", "fphp"], 7600, cores=6,
             providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
             board="NVIDIA Jetson Orin Nano Developer Kit"), "jetson-orin-nano"),
])
def test_detect_suggests_the_profile_that_fits(facts, expected):
    best = detect_profile(facts)
    assert best is not None and best.profile.name == expected, rank_profiles(facts)


def test_detect_explains_why_a_profile_does_not_fit():
    ranked = {c.profile.name: c for c in rank_profiles(machine(isa=["avx2", "fma", "f16c"]))}
    assert not ranked["x86-avx512-vnni"].fits
    assert "lacks avx512f" in " ".join(ranked["x86-avx512-vnni"].reasons)
    assert "arch aarch64" in ranked["rpi5"].reasons[0]


def test_detect_finds_nothing_for_an_unsupported_machine():
    assert detect_profile(machine(arch="riscv64")) is None


def test_generic_arm_board_without_gpu_runtime_is_not_taken_for_a_jetson():
    facts = machine("aarch64", ["asimd", "asimddp", "asimdhp", "fphp"], 7600, cores=6)
    assert detect_profile(facts).profile.name == "rpi5"
