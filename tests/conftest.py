"""Shared fixtures: a real Mosquitto broker, signing keys, and tiny bundles on disk."""
from __future__ import annotations

import pytest

from edge_aigc import pack_bundle
from edge_aigc.bundle import signing
from edge_aigc.remote.local_brokers import Mosquitto
from tests.helpers import MODEL_BYTES, bundle_meta


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
    from tests.helpers.tiny_lm import save_tiny_lm

    tmp = tmp_path_factory.mktemp("bundles")
    x86 = [get_profile("x86-avx2")]
    convert(str(save_tiny_lm(tmp / "tiny-lm", arch="llama")), x86, tmp / "text.eaigc",
            ConvertOptions(recipe="fp32"))
    convert(str(save_tiny_lm(tmp / "slow-lm", steps=0, context=4096, eos=None)), x86, tmp / "slow.eaigc",
            ConvertOptions(recipe="fp32", allow_degraded=True))
    convert("tests.helpers.tiny_models:tiny_dcgan", x86, tmp / "image.eaigc", ConvertOptions(name="tiny-dcgan"))
    convert("tests.helpers.tiny_models:tiny_synth", x86, tmp / "audio.eaigc", ConvertOptions(recipe="fp32", name="tiny-synth"))
    convert("tests.helpers.tiny_models:tiny_blend", x86, tmp / "blend.eaigc", ConvertOptions(name="tiny-blend"))
    return {k: tmp / f"{k}.eaigc" for k in ("text", "slow", "image", "audio", "blend")}


@pytest.fixture(scope="session")
def chat_lm(tmp_path_factory):
    """A tiny LM with a chat template: (its Hugging Face dir, its fp32 bundle)."""
    from converters import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile
    from tests.helpers.tiny_lm import save_chat_lm

    d = tmp_path_factory.mktemp("chat")
    hf = save_chat_lm(d)
    out = d / "chatty.eaigc"
    convert(str(hf), [get_profile("x86-avx2")], out, ConvertOptions(recipe="fp32"))
    return hf, out


@pytest.fixture(scope="session")
def voices(tmp_path_factory):
    """Tiny Piper-shaped voices (tests/helpers/tiny_voice.py), converted: one speaker at the
    default recipe ("solo") and three at fp16 ("trio"); name -> the conversion's result."""
    from converters.pipeline import ConvertOptions, convert
    from edge_aigc.device.profiles import get_profile
    from tests.helpers import tiny_voice

    d = tmp_path_factory.mktemp("voice")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_AIGC_CACHE", str(d / "cache"))
        for name, speakers, recipe in (("solo", 1, None), ("trio", 3, "fp16")):
            src = tiny_voice.build(d / f"{name}.onnx", speakers=speakers)
            [res] = convert(src, [get_profile("x86-avx2")], d / f"{name}.eaigc", ConvertOptions(recipe=recipe))
            out[name] = res
    return out
