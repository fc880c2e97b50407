"""Which layer did quantization break? Per-layer error of a quantized ONNX bundle against its fp32 one.

Both graphs run on the fidelity gate's own inputs (``gate.specs.sample_feeds`` with the
validation seed: real sentences for voices, seeded latents and melodies for generators)
with the output of every weighted op (Conv, ConvTranspose, MatMul, Gemm) and its data
inputs exposed; ONNX Runtime's quantizers keep those tensor names, so each is compared by
name. Two figures per op:

- ``snr_db``: its output in the quantized graph against fp32 — the error accumulated up to
  there, which also moves with everything upstream (a voice's durations shifting by a
  frame misaligns every later tensor);
- ``isolated_snr_db``: the quantized graph's piece between that op's inputs and its output
  (``onnx.utils.Extractor``), fed fp32's own inputs — the error the op adds by itself, as
  ai-edge-quantizer's per-op validation measures it.

The ops with the lowest isolated SNR are the suggested ``--keep-float`` set. TFLite graphs
cannot be cut into pieces (converters/debug/debug_quant_tflite.py), so for them the op's own share
is estimated from the accumulated figures, as ``added_snr_db``: the noise-to-signal power
of its output minus that of its data input (the noise it reads taken to pass through at
the same relative power), in dB. ONNX bundles report that estimate beside the measurement.

Text bundles are compared on windows of real text with an empty KV cache. The builder's
fused LM graphs name a quantized matrix by its precision (``…/qkv_proj/MatMul_Q4/output_0``
where fp32 has ``…/qkv_proj/MatMul/output_0``), so their tensors are matched with that
suffix dropped, and the suggested names are the fp32 graph's (``…/qkv_proj/MatMul``), which
``convert --keep-float`` hands to the builder as its ``nodes_to_exclude``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_aigc.contract import Format, Task
from edge_aigc.errors import ConversionError

from ..gate.calibration import VALIDATION_SEED
from ..gate.specs import sample_feeds
from ..sources.types import Source

__all__ = ["LayerError", "QuantDebug", "debug_quant", "WEIGHTED"]

WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_PER_RUN = 48  # tensors exposed per run: the decoder's activations are megabytes each
_PRECISION = re.compile(r"_Q\d+(?=/|$)")  # the builder's MatMul_Q4 / MatMul_Q8 for a float MatMul


@dataclass(frozen=True)
class LayerError:
    node: str          # the fp32 graph's node name (what --keep-float takes)
    op_type: str
    index: int         # position in the fp32 graph's topological order
    snr_db: float            # output vs fp32: the error accumulated up to this op
    isolated_snr_db: float   # the op alone on fp32's inputs: what it adds by itself (NaN for TFLite)
    added_snr_db: float = math.nan  # the same, estimated from its input's and output's accumulated SNR


@dataclass(frozen=True)
class QuantDebug:
    fp32: str
    quantized: str
    recipe: str
    samples: int
    layers: list[LayerError]        # in graph order
    suggested: list[str]

    def ranked(self) -> list[LayerError]:
        """Worst first: by the op alone where it could be run alone, else by the estimate."""
        return sorted(self.layers, key=lambda e: e.added_snr_db if math.isnan(e.isolated_snr_db) else e.isolated_snr_db)

    def to_dict(self) -> dict[str, Any]:
        return {"fp32": self.fp32, "quantized": self.quantized, "recipe": self.recipe, "samples": self.samples,
                "suggested_keep_float": self.suggested,
                "layers": [{"node": e.node, "op_type": e.op_type, "index": e.index, "snr_db": _finite(e.snr_db),
                            "isolated_snr_db": _finite(e.isolated_snr_db),
                            "added_snr_db": _finite(e.added_snr_db)}
                           for e in self.layers]}


def _finite(db: float) -> float | None:
    from ..gate.validate import IDENTICAL_DB

    return None if math.isnan(db) else round(db, 3) if math.isfinite(db) else IDENTICAL_DB


def _added(input_db: float, output_db: float) -> float:
    """The SNR of the noise an op adds by itself, estimated: its output's noise-to-signal
    power minus its input's, in dB; inf when it adds none that shows."""
    if math.isnan(input_db) or math.isnan(output_db):
        return math.nan
    added = 10 ** (-output_db / 10) - 10 ** (-input_db / 10)
    return -10 * math.log10(added) if added > 0 else math.inf


def _snr(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(ref.astype(np.float64) ** 2)), 1e-30) / noise)


def _with_outputs(model, names: list[str]) -> bytes:
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in have)
    return m.SerializeToString()


def _run_all(model, names: list[str], feeds: list[dict]) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort

    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(names), _PER_RUN):
        part = names[start:start + _PER_RUN]
        session = ort.InferenceSession(_with_outputs(model, part), providers=["CPUExecutionProvider"])
        for feed in feeds:
            for name, value in zip(part, session.run(part, feed)):
                out[name].append(value)
    return out


def _snr_over(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    pairs = [(r, o) for r, o in zip(ref, out) if r.shape == o.shape]  # durations may differ per sample
    if not pairs:
        return math.nan
    return _snr(np.concatenate([r.ravel() for r, _ in pairs]), np.concatenate([o.ravel() for _, o in pairs]))


def debug_quant(fp32_bundle: Path, quant_bundle: Path, samples: int = 4, suggest: int = 4,
                public_key=None) -> QuantDebug:
    """Per-layer error of ``quant_bundle`` against ``fp32_bundle`` (ONNX, same model)."""
    import onnx

    from edge_aigc.bundle.load import load_bundle

    with load_bundle(fp32_bundle, public_key=public_key) as ref, \
            load_bundle(quant_bundle, public_key=public_key) as cand:
        mr, mc = ref.manifest, cand.manifest
        _comparable(mr, mc)
        if mr.recipe != "fp32":
            raise ConversionError(f"the first bundle must be the fp32 one; {fp32_bundle} is {mr.recipe}")
        ref_path, cand_path = ref.root / mr.config.model, cand.root / mc.config.model
        source = _source(fp32_bundle, ref.root, mr, ref_path)
        feeds = sample_feeds(source, ref_path, samples, VALIDATION_SEED)
        if mr.format == Format.TFLITE:
            from edge_aigc.device.system import usable_cpus

            from .debug_quant_tflite import compare_tflite

            layers = [LayerError(out, kind, index, snr, math.nan, _added(src, snr))
                      for index, kind, out, snr, src in compare_tflite(ref_path, cand_path, feeds, usable_cpus().count)]
            return _result(fp32_bundle, quant_bundle, mc.recipe, samples, layers, suggest)
        fused = mr.task == Task.TEXT and mr.config.kv_layout == "shared"
        fp32_model, quant_model = onnx.load(str(ref_path)), onnx.load(str(cand_path))
    layers = _compare_onnx(fp32_model, quant_model, feeds, fused)
    return _result(fp32_bundle, quant_bundle, mc.recipe, samples, layers, suggest)


def _comparable(mr, mc) -> None:
    """Two bundles of one model and format that debug-quant can compare, or a ConversionError."""
    if mr.format != mc.format:
        raise ConversionError(f"debug-quant compares two bundles of one format; these are {mr.format} and "
                              f"{mc.format}")
    if mr.task != mc.task or mr.name != mc.name:
        raise ConversionError(f"these are different models: {mr.name} ({mr.task}) and {mc.name} ({mc.task})")
    if mr.format == Format.TFLITE and mr.task == Task.TEXT:
        raise ConversionError("debug-quant compares TFLite generators and voices; a TFLite LM's cache "
                              "signatures are not compared (convert it with --format onnx --lm-export dynamo)")


def _compare_onnx(fp32_model, quant_model, feeds: list[dict], fused: bool) -> list[LayerError]:
    """Each weighted op of the fp32 graph against its twin in the quantized one (by name)."""
    from onnx.utils import Extractor

    produced = {o for n in quant_model.graph.node for o in n.output} | {i.name for i in quant_model.graph.input}
    twin = {name: name for name in produced}  # an fp32 tensor's name -> the quantized graph's
    if fused:
        twin.update({_PRECISION.sub("", name): name for name in produced
                     if _PRECISION.search(name) and _PRECISION.sub("", name) not in produced})
    weights = {i.name for i in fp32_model.graph.initializer}
    ops = [(i, n, [t for t in n.input if t and t not in weights]) for i, n in enumerate(fp32_model.graph.node)
           if n.op_type in WEIGHTED and n.output[0] in twin]
    ops = [(i, n, data) for i, n, data in ops if data and all(t in twin for t in data)]
    if not ops:
        raise ConversionError("no weighted op of the fp32 graph is found by name in the quantized one")
    graph_inputs = {i.name for i in fp32_model.graph.input}
    feeds = [{k: v for k, v in f.items() if k in graph_inputs} for f in feeds]  # a fused graph takes no position_ids
    exposed = sorted({t for _, n, data in ops for t in (*data, n.output[0])} - graph_inputs)
    ref_vals = _run_all(fp32_model, exposed, feeds)
    got = _run_all(quant_model, sorted({twin[t] for t in exposed}), feeds)
    quant_vals = {t: got[twin[t]] for t in exposed}
    for t in graph_inputs:
        ref_vals[t] = quant_vals[t] = [f[t] for f in feeds if t in f]
    pieces = Extractor(quant_model)  # shape inference once, not once per op
    layers = []
    for index, node, data in ops:
        accumulated = _snr_over(ref_vals[node.output[0]], quant_vals[node.output[0]])
        alone = _isolated(pieces, [twin[t] for t in data], twin[node.output[0]],
                          [dict(zip((twin[t] for t in data), v)) for v in zip(*(ref_vals[t] for t in data))])
        upstream = _snr_over(ref_vals[data[0]], quant_vals[data[0]])
        layers.append(LayerError(node.name, node.op_type, index, accumulated,
                                 _snr_over(ref_vals[node.output[0]], alone), _added(upstream, accumulated)))
    return layers


def _result(fp32: Path, quantized: Path, recipe: str, samples: int, layers: list[LayerError],
            suggest: int) -> QuantDebug:
    """The comparison, with the ``suggest`` worst ops that quantization touched as the keep-float set."""
    result = QuantDebug(str(fp32), str(quantized), recipe, samples, layers, [])
    touched = [e for e in result.ranked() if math.isfinite(e.isolated_snr_db)
               or (math.isnan(e.isolated_snr_db) and math.isfinite(e.added_snr_db))]
    result.suggested.extend(e.node for e in touched[:suggest])
    return result


def _source(bundle: Path, root: Path, manifest, model_path: Path) -> Source:
    """The bundle as a conversion source, as far as the gate's input sampler needs one."""
    source = Source("onnx", str(bundle), manifest.name, manifest.task, dict(manifest.task_config), onnx_path=model_path)
    if manifest.task == Task.TEXT:  # windows of real text through the bundle's own tokenizer
        from tokenizers import Tokenizer

        from ..sources.types import LmSpec

        c = manifest.config
        source.lm = LmSpec(c.num_layers, c.num_kv_heads, c.head_dim, c.vocab_size, c.max_context,
                           c.eos_token_id[0] if c.eos_token_id else None, c.bos_token_id, c.architecture)
        source.tokenizer = Tokenizer.from_file(str(root / c.tokenizer))
    return source


def _isolated(pieces, inputs: list[str], output: str, feeds: list[dict]) -> list[np.ndarray]:
    """The quantized graph's piece from ``inputs`` to ``output`` (cut by ``pieces``, an
    ``onnx.utils.Extractor``), run on fp32's values of them."""
    import onnxruntime as ort

    piece = pieces.extract_model(inputs, [output])
    session = ort.InferenceSession(piece.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run([output], feed)[0] for feed in feeds]


def plot(result: QuantDebug, path: Path) -> Path:
    """Error by layer as a PNG: the accumulated SNR and each op's isolated SNR."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConversionError("--plot needs matplotlib: pip install matplotlib") from None
    x = np.arange(len(result.layers))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    top.plot(x, [min(e.snr_db, 120) for e in result.layers], lw=1)
    top.set_ylabel("accumulated SNR, dB")
    top.set_title(f"{Path(result.quantized).name} ({result.recipe}) against fp32, {result.samples} gate inputs")
    alone = not any(math.isnan(e.isolated_snr_db) for e in result.layers)  # TFLite: the estimate instead
    bottom.bar(x, [min(e.isolated_snr_db if alone else e.added_snr_db, 120) for e in result.layers], width=1.0,
               color=["tab:red" if e.node in result.suggested else "tab:gray" for e in result.layers])
    bottom.set_ylabel("the op alone: SNR, dB" if alone else "the op's own SNR (est.), dB")
    bottom.set_xlabel("weighted ops in graph order (red: suggested --keep-float)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
