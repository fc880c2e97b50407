"""Shrinking: recipes.py (the ONNX recipes by name), tflite.py (LiteRT's), embedding.py (int8
embedding tables), gguf_blocks.py (a GGUF file's own 4-bit blocks kept), prune.py."""
