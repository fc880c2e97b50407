"""Shared fixtures: a real Mosquitto broker, signing keys, and tiny bundles on disk."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from edge_aigc.remote.local_brokers import Mosquitto  # noqa: E402

from edge_aigc import pack_bundle
from edge_aigc.bundle import signing  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Mosquitto for the session, on a free 127.0.0.1 port, stopped by its PID."""
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def keypair(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    key_path, pub_path = signing.generate_keypair(d / "release")
    return key_path, pub_path


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys-other")
    return signing.generate_keypair(d / "other")


MODEL_BYTES = bytes(range(256)) * 64  # 16 KiB stands in for weights; hashes don't care


def bundle_meta(name: str = "tiny-gen", version: str = "1.0.0", **extra) -> dict:
    return {"name": name, "version": version, "task": "image-generation", "format": "onnx",
            "profile": "x86-avx2", "recipe": "fp32",
            "task_config": {"image_size": [8, 8], "class_labels": ["a", "b"]},
            "io": {"inputs": {"z": {"dtype": "float32", "shape": [1, 4]}}}, **extra}


@pytest.fixture
def make_bundle(tmp_path):
    """make_bundle(name=..., version=..., key=None, files=None) -> path of a real .eaigc file."""
    def make(name="tiny-gen", version="1.0.0", key=None, files=None, compress=True, **meta):
        files = files if files is not None else {"model.onnx": MODEL_BYTES, "labels.txt": b"a\nb\n"}
        out = tmp_path / f"{name}-{version}{'' if compress else '-plain'}.eaigc"
        pack_bundle(out, bundle_meta(name, version, **meta), files,
                    key=signing.load_private_key(key) if key else None, compress=compress)
        return out
    return make


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """Real bundles of tiny models, converted once per session: text, image, audio, and a
    'slow' LM without EOS and with a long context, for requests that must run a while."""
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile
    from tiny_lm import save_tiny_lm

    tmp = tmp_path_factory.mktemp("bundles")
    x86 = [get_profile("x86-avx2")]
    convert(str(save_tiny_lm(tmp / "tiny-lm", arch="llama")), x86, tmp / "text.eaigc",
            ConvertOptions(recipe="fp32"))
    convert(str(save_tiny_lm(tmp / "slow-lm", steps=0, context=4096, eos=None)), x86, tmp / "slow.eaigc",
            ConvertOptions(recipe="fp32", allow_degraded=True))
    convert("tiny_models:tiny_dcgan", x86, tmp / "image.eaigc", ConvertOptions(name="tiny-dcgan"))
    convert("tiny_models:tiny_synth", x86, tmp / "audio.eaigc", ConvertOptions(recipe="fp32", name="tiny-synth"))
    convert("tiny_models:tiny_blend", x86, tmp / "blend.eaigc", ConvertOptions(name="tiny-blend"))
    return {k: tmp / f"{k}.eaigc" for k in ("text", "slow", "image", "audio", "blend")}


@pytest.fixture(scope="session")
def chat_lm(tmp_path_factory):
    """A tiny LM with a chat template: (its Hugging Face dir, its fp32 bundle)."""
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile
    from tiny_lm import save_chat_lm

    d = tmp_path_factory.mktemp("chat")
    hf = save_chat_lm(d)
    out = d / "chatty.eaigc"
    convert(str(hf), [get_profile("x86-avx2")], out, ConvertOptions(recipe="fp32"))
    return hf, out
