"""Quantize step: one function per recipe, chosen through the ``RECIPES`` dict.

Each takes ``(src, dst, options)`` and writes ``dst``. The recipe names are shared with
the TFLite path and the device profiles: fp32, fp16, int8-dynamic, int8-static, int4.
"""
from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edge_aigc.errors import ConversionError

__all__ = ["QuantizeOptions", "RECIPES", "quantize_onnx", "check_keep_float"]


@dataclass
class QuantizeOptions:
    per_channel: bool = True
    reduce_range: bool = False           # 7-bit weights, for AVX2 without VNNI
    op_types: list[str] | None = None    # restrict int8 to these op types (None: quantizer default)
    block_size: int = 32                 # int4: weights per scale
    accuracy_level: int = 4              # int4: MatMulNBits compute type (4 = int8 activations)
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None  # int8-static feeds
    keep_float: tuple[str, ...] = ()     # node names left in float (edge-aigc debug-quant suggests them)
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _quiet() -> Iterator[None]:
    # onnxruntime.quantization logs one INFO line per node, and advises pre-processing on
    # the root logger; we skip pre-processing on purpose (it fails on dynamo graphs).
    for name in ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fp32(src: Path, dst: Path, opts: QuantizeOptions) -> None:
    shutil.copyfile(src, dst)


def fp16(src: Path, dst: Path, opts: QuantizeOptions) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the runtime feeds and reads float32 whatever the recipe. The converter's
    # default block list keeps ops without good fp16 kernels (CumSum, …) in fp32; a custom
    # op_block_list produced mistyped graphs that ran to NaN here, so op_types is not applied.
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     node_block_list=list(opts.keep_float) or None)
    onnx.save(model, str(dst))


def _excluded(names: tuple[str, ...]) -> list[str]:
    """The quantizers' ``nodes_to_exclude`` for ``--keep-float``: they first rewrite each Gemm as
    ``<name>_MatMul`` + an Add, so a Gemm's name is given in both forms."""
    return [*names, *(f"{n}_MatMul" for n in names)]


def int8_dynamic(src: Path, dst: Path, opts: QuantizeOptions) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=opts.per_channel,
                     reduce_range=opts.reduce_range, op_types_to_quantize=opts.op_types,
                     nodes_to_exclude=_excluded(opts.keep_float))


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over our calibration sampler."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def int8_static(src: Path, dst: Path, opts: QuantizeOptions) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if opts.calibration is None:
        raise ConversionError("int8-static needs calibration data and this source has no sampler")
    # QDQ keeps float ops where no int8 kernel exists; pre-processing is skipped on
    # purpose: quant_pre_process fails on dynamo-exported graphs.
    quantize_static(str(src), str(dst), _Feeds(opts.calibration()), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                    op_types_to_quantize=opts.op_types, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=_excluded(opts.keep_float))


def int4(src: Path, dst: Path, opts: QuantizeOptions) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=opts.block_size,
                                     is_symmetric=True, accuracy_level=opts.accuracy_level,
                                     nodes_to_exclude=list(opts.keep_float))
    quantizer.process()
    if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
        raise ConversionError("int4 found no MatMul weights to quantize; it is a recipe for "
                              "language models (use int8-dynamic or fp16 for conv generators)")
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)


RECIPES: dict[str, Callable[[Path, Path, QuantizeOptions], None]] = {
    "fp32": fp32, "fp16": fp16, "int8-dynamic": int8_dynamic, "int8-static": int8_static, "int4": int4,
}


def require_known(names: tuple[str, ...], known: list[str], missing: str, hint: str) -> None:
    """Every ``--keep-float`` name is in ``known`` (a typo would silently keep nothing); the
    error names the closest ones, else ``hint``."""
    import difflib

    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            raise ConversionError(f"--keep-float {name!r}: {missing}"
                                  + (f" (close: {', '.join(close)})" if close else f"; {hint}"))


def check_keep_float(src: Path, names: tuple[str, ...]) -> None:
    """Every ``--keep-float`` name is a node of the fp32 graph."""
    import onnx

    nodes = [n.name for n in onnx.load(str(src), load_external_data=False).graph.node]
    require_known(names, nodes, "no such node in the fp32 graph", "edge-aigc debug-quant lists the nodes by their error")


def quantize_onnx(recipe: str, src: Path, dst: Path, opts: QuantizeOptions) -> Path:
    if recipe not in RECIPES:
        raise ConversionError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    check_keep_float(src, opts.keep_float)
    try:
        with _quiet():
            RECIPES[recipe](src, dst, opts)
    except ConversionError:
        raise
    except Exception as exc:  # the quantizers raise many kinds of errors on odd graphs
        raise ConversionError(f"{recipe} quantization failed: {type(exc).__name__}: {exc}") from None
    return dst
