"""The shapes every source kind loads into: :class:`Source`, :class:`TorchGenerator`, :class:`LmSpec`.

Their own module so that each source loader (``hf_source``, the torch and ONNX loaders in
``sources``) imports the types without importing the dispatcher that imports them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TorchGenerator", "LmSpec", "Source", "model_name"]


@dataclass
class TorchGenerator:
    """What a factory returns: the module and how to call it."""

    module: Any                                    # torch.nn.Module
    example_inputs: dict[str, Any]                 # input name -> torch.Tensor
    task: str
    task_config: dict[str, Any] = field(default_factory=dict)
    output_names: list[str] | None = None
    # input name -> {axis: dim name}; default: axis 0 of every input is "batch"
    dynamic_axes: dict[str, dict[int, str]] | None = None
    # hints for quantization, e.g. {"op_types": ["Conv", "ConvTranspose"]} to keep
    # a float excitation path (see the audio zoo model)
    quantize: dict[str, Any] = field(default_factory=dict)
    # TFLite has fixed shapes: the sizes to export for each dynamic dim name, one signature
    # per combination (the runtime pads a request up to the nearest). Default: batch 1 and 8.
    tflite_sizes: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class LmSpec:
    """Shape facts of a causal LM that the KV-cache export and the runtime need."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    eos_token_id: int | None
    bos_token_id: int | None
    architecture: str


@dataclass
class Source:
    kind: str                                      # "torch" | "onnx" | "hf" | "keras"
    ref: str
    name: str
    task: str
    task_config: dict[str, Any]
    generator: TorchGenerator | None = None        # torch and hf sources
    onnx_path: Path | None = None                  # onnx sources
    assets: dict[str, Path] = field(default_factory=dict)  # extra bundle files
    lm: LmSpec | None = None
    lm_model: Any = None                           # the transformers causal LM (hf sources)
    tokenizer: Any = None                          # tokenizers.Tokenizer for text sources
    origin: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest's source (e.g. the GGUF file)

    @property
    def quantize_hints(self) -> dict[str, Any]:
        return self.generator.quantize if self.generator else self.task_config.get("quantize", {})


def model_name(text: str) -> str:
    """A default model name that satisfies the manifest's name rule."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name[:64] or "model"
