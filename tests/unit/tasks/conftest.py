"""One tiny LM on each decode loop, shared by the tests of decoding (speculation, prefix reuse)."""
from __future__ import annotations

import pytest

from converters import ConvertOptions, convert
from edge_aigc.device.profiles import get_profile
from tests.helpers.tiny_gguf import write_tiny_gguf
from tests.helpers.tiny_lm import save_tiny_lm

ENGINES = ("fused", "dynamo", "gguf")


@pytest.fixture(scope="package")
def engine_bundles(tmp_path_factory):
    """The same weights three ways: ONNX with the cache shared in place (``fused``), ONNX with
    the cache passed step to step (``dynamo``), and a GGUF file on llama.cpp (``gguf``)."""
    from tests.unit.tasks.test_llama_engine import gguf_bundle

    d = tmp_path_factory.mktemp("engines")
    hf = save_tiny_lm(d / "hf", arch="llama", hidden=64, steps=150, seed=11)
    with pytest.MonkeyPatch.context() as patch:  # the GGUF source's work files: the test's, not the user's cache
        patch.setenv("EDGE_AIGC_CACHE", str(d / "cache"))
        bundles = [gguf_bundle(d / "gguf.eaigc", write_tiny_gguf(hf, d / "Tiny.F32.gguf"), name="gguf")]
    for export in ("fused", "dynamo"):
        bundles.append(d / f"{export}.eaigc")
        convert(str(hf), [get_profile("x86-avx2")], bundles[-1],
                ConvertOptions(recipe="fp32", lm_export=export, name=export))
    return bundles
