"""Host converters, ONNX path: real exports, quantization and fidelity on tiny models."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from converters import ConvertOptions, convert
from converters.sources.load import load_source
from edge_aigc import Runtime, load_bundle
from edge_aigc.bundle import signing
from edge_aigc.errors import ConversionError, FidelityError, SourceError
from edge_aigc.device.profiles import get_profile, load_profile
from tests.helpers.tiny_lm import hf_greedy, save_tiny_lm
from tests.helpers.tiny_models import dcgan_case, tiny_dcgan

from tests.helpers import ROOT, recipe_profile


@pytest.fixture(scope="module")
def image_bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    recipes = ["fp32", "fp16", "int8-dynamic", "int8-static"]
    profiles = [load_profile(recipe_profile(tmp, r)) for r in recipes]
    results = convert("tests.helpers.tiny_models:tiny_dcgan", profiles, tmp / "out", ConvertOptions(name="tiny-dcgan"))
    return {r.recipe: r for r in results}


@pytest.mark.parametrize("recipe", ["fp32", "fp16", "int8-dynamic", "int8-static"])
def test_image_generator_converts_under_each_recipe_within_the_gate(image_bundles, recipe):
    result = image_bundles[recipe]
    z, label, expected = dcgan_case()
    with load_bundle(result.bundle) as b:
        m = b.manifest
        assert (m.recipe, m.task, m.format) == (recipe, "image-generation", "onnx")
        assert m.fidelity["passed"] and m.fidelity["metrics"]["psnr_db"] >= m.fidelity["thresholds"]["psnr_db"]
        sess = ort.InferenceSession(str(b.file("model.onnx")), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"z": z.numpy(), "label": label.numpy()})[0]
    assert got.shape == (3, 1, 28, 28), "dynamic batch axis"
    psnr = 10 * np.log10(4.0 / np.mean((got - expected) ** 2))
    assert psnr >= m.fidelity["thresholds"]["psnr_db"]
    assert m.io["inputs"]["label"]["dtype"] == "int64"


def test_quantized_image_artifacts_are_smaller(image_bundles):
    sizes = {r: image_bundles[r].model_bytes for r in image_bundles}
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    assert sizes["int8-static"] < 0.6 * sizes["fp32"]


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lms")
    return {arch: save_tiny_lm(tmp / f"tiny-{arch}", arch=arch) for arch in ("gpt2", "llama")}


# GPT-2 is not an architecture onnxruntime-genai's builder knows: "fused" falls back to dynamo.
@pytest.mark.parametrize("arch,lm_export,layout", [("gpt2", "fused", "concat"), ("llama", "fused", "shared"),
                                                   ("llama", "dynamo", "concat")])
def test_exported_lm_greedy_with_kv_cache_equals_pytorch_greedy(lm_dirs, arch, lm_export, layout, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"{arch}.eaigc"
    convert(str(lm_dirs[arch]), [get_profile("x86-avx2")], out, ConvertOptions(recipe="fp32", lm_export=lm_export))
    model = AutoModelForCausalLM.from_pretrained(lm_dirs[arch], local_files_only=True).eval()
    with load_bundle(out) as b:
        cfg = b.manifest.task_config
        assert b.file("tokenizer.json").is_file() and cfg["num_layers"] == 2
        assert cfg.get("kv_layout", "concat") == layout
        inputs = {i.name for i in ort.InferenceSession(str(b.file("model.onnx"))).get_inputs()}
        assert ("position_ids" in inputs) == (layout == "concat")
    with Runtime([out], profile="x86-avx2") as rt:
        task = rt.model(f"tiny-{arch}").task
        for prompt_text in ("The quick brown fox", "今天天气"):
            prompt = task.encode(prompt_text)
            ref = hf_greedy(model, prompt, 24)
            got = rt.generate(f"tiny-{arch}", prompt=prompt_text, max_new_tokens=24, temperature=0,
                              repetition_penalty=1.0).meta["token_ids"]
            assert got == ref, prompt_text
            assert len(set(ref)) > 3, "a trained model, not a degenerate repeat"


@pytest.fixture(scope="module")
def matmul_lm(tmp_path_factory):
    # MatMul/Gemm-dominated: wide FFN, small vocabulary (embeddings are Gathers).
    return save_tiny_lm(tmp_path_factory.mktemp("mm") / "mm-llama", hidden=128, ffn=512, steps=80,
                        gate_text=True)


def test_int8_and_int4_lm_artifacts_shrink_and_pass_the_gate(matmul_lm, tmp_path):
    profiles = [load_profile(recipe_profile(tmp_path, r)) for r in ("fp32", "int8-dynamic", "int4")]
    results = {r.recipe: r for r in convert(str(matmul_lm), profiles, tmp_path / "out")}
    fp32 = results["fp32"].model_bytes
    assert fp32 / results["int8-dynamic"].model_bytes >= 2.5
    assert fp32 / results["int4"].model_bytes >= 3.0
    for recipe in ("int8-dynamic", "int4"):
        fid = results[recipe].manifest.fidelity
        assert fid["passed"] and fid["metrics"]["ppl_ratio"] <= fid["thresholds"]["ppl_ratio"]
        assert fid["metrics"]["answers_kept"] >= fid["thresholds"]["answers_kept"] and "GPL-3" in fid["inputs"]
        assert fid["fp32_bytes"] == results["fp32"].fp32_bytes  # the dynamo reference export


def test_impossible_threshold_fails_with_the_measured_values(tmp_path):
    out = tmp_path / "never.eaigc"
    opts = ConvertOptions(recipe="int8-dynamic", thresholds={"psnr_db": 500})
    with pytest.raises(FidelityError, match=r"psnr_db = [\d.]+, needs ≥ 500.*--allow-degraded"):
        convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], out, opts)
    assert not out.exists()


def test_allow_degraded_packages_and_records_it(tmp_path):
    out = tmp_path / "degraded.eaigc"
    opts = ConvertOptions(recipe="int8-dynamic", thresholds={"psnr_db": 500}, allow_degraded=True)
    convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], out, opts)
    with load_bundle(out) as b:
        assert b.manifest.fidelity["degraded"] is True and not b.manifest.fidelity["passed"]


def test_threshold_for_another_task_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="'top1_agreement' does not apply to image-generation"):
        convert("tests.helpers.tiny_models:tiny_dcgan", [get_profile("x86-avx2")], tmp_path / "x.eaigc",
                ConvertOptions(thresholds={"top1_agreement": 0.5}))


@pytest.mark.parametrize("ref,message", [
    ("no_such_module_xyz:factory", "cannot import 'no_such_module_xyz'"),
    ("tests.helpers.tiny_models:does_not_exist", "has no callable 'does_not_exist'"),
    ("tests.helpers.tiny_models:LATENT", "has no callable 'LATENT'"),
    ("tests.helpers.bad_sources:returns_a_list", "returned list; expected converters.TorchGenerator"),
    ("tests.helpers.bad_sources:returns_not_a_module", "not a torch.nn.Module"),
    ("tests.helpers.bad_sources:returns_unknown_task", "task 'video-generation' is not one of"),
    ("tests.helpers.bad_sources:raises", "raised RuntimeError: weights file missing"),
    ("nonexistent.onnx", "no such ONNX file"),
])
def test_bad_source_fails_with_a_clear_message(ref, message):
    with pytest.raises(SourceError, match=message):
        load_source(ref)


def test_onnx_file_source_needs_a_sidecar_and_converts_with_one(tmp_path):
    gen = tiny_dcgan()
    onnx_path = tmp_path / "gen.onnx"
    z = torch.randn(2, 16)
    label = torch.tensor([0, 1])
    torch.onnx.export(gen.module, (z, label), str(onnx_path), input_names=["z", "label"],
                      output_names=["image"], dynamo=True, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")}, {0: torch.export.Dim("batch")}))
    with pytest.raises(SourceError, match="no sidecar"):
        load_source(onnx_path)
    (tmp_path / "gen.onnx.json").write_text(json.dumps(
        {"task": "image-generation", "task_config": {"num_classes": 4, "output_range": [-1, 1]}}))
    out = tmp_path / "gen.eaigc"
    [result] = convert(str(onnx_path), [get_profile("rpi5")], out)
    assert result.recipe == "int8-dynamic" and result.manifest.source["kind"] == "onnx"


def test_convert_cli_signs_for_all_profiles_and_prints_a_summary(tmp_path):
    key, pub = signing.generate_keypair(tmp_path / "k")
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "convert", "tests.helpers.tiny_models:tiny_dcgan",
                          "--profile", "all", "--sign", key, "-o", tmp_path / "bundles"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "export ONNX" in out.stderr and "validate" in out.stderr
    bundles = sorted((tmp_path / "bundles").glob("*.eaigc"))
    assert len(bundles) >= 6 and "PROFILE" in out.stdout
    assert "export TFLite" in out.stderr  # rpi4 and rpi-zero-2w prefer it
    rpi4 = next(b for b in bundles if "rpi4" in b.name)
    assert load_bundle(rpi4).manifest.format == "tflite"
    jetson = next(b for b in bundles if "jetson" in b.name)
    with load_bundle(jetson, public_key=signing.load_public_key(pub)) as b:
        assert b.manifest.recipe == "fp16" and b.signer


def test_convert_cli_without_a_profile_value_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "convert", "x:y"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--profile" in out.stderr


def test_convert_without_the_host_extra_says_what_to_install():
    # A device install has no torch: simulate it by making the import fail.
    code = ("import sys; sys.modules['torch'] = None; from edge_aigc.cli import main; "
            "sys.exit(main(['convert', 'x:y', '--profile', 'rpi5', '-o', 'x.eaigc']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 8, out.stderr
    assert "needs the host extra (torch is missing)" in out.stderr and "Traceback" not in out.stderr
