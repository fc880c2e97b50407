"""Export to the device formats: onnx.py and tflite.py (torch to ONNX / LiteRT), tflite_lm.py
(LMs with LiteRT signatures), lm_builder.py (onnxruntime-genai's fused LM graphs), kv_cache.py,
optimize.py (graph clean-up)."""
