"""``edge-aigc debug-quant``: where a quantized model departs from fp32 (ONNX and LiteRT)."""
