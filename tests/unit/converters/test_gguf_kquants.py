"""K-quant GGUF files (what most published files are: Q4_K_M, Q5_K_M, Q6_K) on the ONNX path:
every block type is read exactly as llama.cpp dequantizes it, and ``int4`` keeps the file's
blocks in the graph without rounding them again. The files are written here by llama.cpp's
own quantizer from a tiny Llama (K-quants need rows of 256 weights)."""
from __future__ import annotations

import numpy as np
import pytest

from converters import ConvertOptions, convert
from converters.quantize.gguf_read import KNOWN_TYPES, read_blocks
from converters.quantize.llama_quantize import quantize_to
from converters.sources.load import load_source
from edge_aigc import load_bundle
from edge_aigc.device.profiles import get_profile
from tests.helpers.tiny_gguf import write_tiny_gguf
from tests.helpers.tiny_lm import save_tiny_lm

KINDS = ("Q4_K_M", "Q5_K_M", "Q6_K")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_AIGC_CACHE", str(tmp_path_factory.getbasetemp() / "gguf-cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kquants")
    hf = save_tiny_lm(d / "tiny-k", arch="llama", hidden=256, ffn=512, steps=60, seed=7, gate_text=True, tied=True)
    f32 = write_tiny_gguf(hf, d / "Tiny-K.F32.gguf")
    out = {"F32": f32}
    for kind in KINDS + ("Q5_0",):
        out[kind] = d / f"Tiny-K.{kind}.gguf"
        quantize_to(f32, out[kind], kind if kind != "Q5_0" else "Q5_K_M", 2)
    return out


def test_every_block_type_reads_as_llama_cpp_dequantizes_it(files):
    import gguf

    seen = set()
    for kind in KINDS:
        for tensor in gguf.GGUFReader(str(files[kind])).tensors:
            blocks = read_blocks(tensor)
            if blocks is None:
                assert tensor.tensor_type.name not in KNOWN_TYPES
                continue
            seen.add(tensor.tensor_type.name)
            expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(blocks.rows, -1)
            assert np.array_equal(blocks.values(), expected.astype(np.float32)), tensor.name
            assert blocks.q.max() < (16 if blocks.bits == 4 else 256)
    assert {"Q4_K", "Q6_K", "Q5_K"} <= seen, seen


def test_q5_0_and_q8_0_read_exactly():
    """Q5_0 and Q8_0 blocks written by gguf-py's quantizer come back as its dequantization."""
    import gguf

    class Tensor:  # the two fields read_blocks uses of a GGUFReader tensor
        def __init__(self, data, kind):
            self.data, self.tensor_type = data, kind

    weights = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    for name in ("Q5_0", "Q8_0", "Q4_0", "Q4_1"):
        kind = gguf.GGMLQuantizationType[name]
        data = gguf.quants.quantize(weights, kind)
        blocks = read_blocks(Tensor(data, kind))
        assert np.array_equal(blocks.values(), gguf.quants.dequantize(data, kind).astype(np.float32)), name


@pytest.mark.parametrize("kind", KINDS)
def test_a_k_quant_file_converts_keeping_its_blocks_exactly(files, kind, tmp_path):
    import onnx

    from converters.export.onnx import export_onnx
    from edge_aigc.backends import open_session
    from edge_aigc.tasks.text.task import make_kv_loop

    lines: list[str] = []
    out = tmp_path / f"{kind}.eaigc"
    # Q4_K_M is mostly 4-bit: int4 (its blocks kept) is its default; the others name it
    recipe = None if kind == "Q4_K_M" else "int4"
    [result] = convert(str(files[kind]), [get_profile("x86-avx2")], out,
                       ConvertOptions(recipe=recipe, accuracy_level=1, allow_degraded=True), progress=lines.append)
    kept = next(line for line in lines if "matrices kept as the file's blocks" in line)
    assert "11 matrices kept" in kept and "embedding tied to the head" in kept and "requantized" not in kept, kept
    assert result.recipe == "int4"
    source = load_source(str(files[kind]))
    reference = export_onnx(source, tmp_path / "fp32.onnx").path   # the file's blocks dequantized
    ids = np.array([list(range(3, 67))], np.int64)
    with load_bundle(out) as b:
        model = onnx.load(str(b.file("model.onnx")))
        cfg = b.manifest.task_config
    products = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    sizes = {a.i for n in products for a in n.attribute if a.name == "block_size"}
    bits = {a.i for n in products for a in n.attribute if a.name == "bits"}
    for node in products:  # float32 activations everywhere: the products are then the file's weights exactly
        next(a for a in node.attribute if a.name == "accuracy_level").i = 1
    onnx.save(model, tmp_path / "level1.onnx")
    logits = []
    for path, config in ((reference, source.task_config), (tmp_path / "level1.onnx", cfg)):
        loop = make_kv_loop(open_session("onnx", path, None, "t"), config)
        logits.append(loop.step(loop.start(1), ids))
    assert 8 in bits and 16 in sizes   # Q6_K parts (in every K mix here): 8-bit blocks of 16
    assert np.abs(logits[0] - logits[1]).max() < 1e-3 * np.abs(logits[0]).max()
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).all()
