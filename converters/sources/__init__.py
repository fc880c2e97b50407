"""Where a conversion starts: load.py dispatches a reference (a torch factory, an ONNX file, a
Hugging Face directory, a GGUF, Keras or Piper file) to its loader; types.py holds what they return."""
