"""Host-side converters: a generator in, a verified, quantized ``.eaigc`` bundle out.

Needs the ``host`` extra (torch, onnx, onnxslim, transformers). The device side
(``edge_aigc``) never imports this package, except the CLI's ``convert`` command.
"""
# Fail at import, not mid-conversion, when the host extra is missing: the CLI turns
# this ImportError into "install the host extra".
import onnx  # noqa: F401
import onnxslim  # noqa: F401
import torch  # noqa: F401

from .pipeline import ConversionResult, ConvertOptions, convert
from .sources.load import LmSpec, Source, TorchGenerator, load_source
from .gate.specs import GateSpec, get_gate, register_gate
from .gate.validate import FidelityReport

__all__ = ["convert", "ConvertOptions", "ConversionResult", "load_source", "Source",
           "TorchGenerator", "LmSpec", "FidelityReport", "GateSpec", "get_gate", "register_gate"]
