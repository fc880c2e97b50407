"""Sources: what a conversion starts from, loaded into one :class:`Source` shape.

Five kinds, told apart by the reference the user gives:

- ``package.module:function`` — a PyTorch factory returning a :class:`TorchGenerator`
  (or a ``(module, example_inputs, task[, task_config])`` tuple);
- ``path/to/model.onnx`` — an existing ONNX file with a sidecar ``model.onnx.json`` or
  ``model.toml`` holding at least ``task`` (and ``task_config``); a Piper voice's own
  ``voice.onnx.json`` makes it a speech-synthesis source (``piper_source``);
- ``path/to/hf-dir`` — a local Hugging Face causal-LM directory (config.json, weights,
  tokenizer files). Nothing is fetched from a hub;
- ``path/to/model.gguf`` — a llama.cpp GGUF file (``gguf_source``), read through an HF
  directory it is dequantized into once;
- ``path/to/model.keras`` — a Keras 3 model (``keras_source``), run on Keras' torch backend
  and exported like a PyTorch factory.
"""
from __future__ import annotations

import importlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from edge_aigc.contract import Task
from edge_aigc.errors import CorruptBundle, SourceError
from edge_aigc.contract import bundle_tasks
from edge_aigc.bundle.task_config import parse_task_config

from .piper import is_piper_voice, load_piper
from .types import LmSpec, Source, TorchGenerator, model_name

__all__ = ["SourceError", "TorchGenerator", "LmSpec", "Source", "load_source", "model_name"]


def _check_task(task: Any, where: str) -> str:
    if task not in bundle_tasks():
        raise SourceError(f"{where}: task {task!r} is not one of {', '.join(bundle_tasks())}")
    return task


def _load_factory(ref: str) -> Source:
    module_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while importing
        raise SourceError(f"cannot import {module_name!r} for source {ref!r}: "
                          f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise SourceError(f"{module_name!r} has no callable {func_name!r} (source {ref!r})")
    try:
        result = func()
    except Exception as exc:
        raise SourceError(f"source factory {ref!r} raised {type(exc).__name__}: {exc}") from None
    gen = _as_generator(result, ref)
    return Source("torch", ref, model_name(module_name.rsplit(".", 1)[-1]), gen.task,
                  dict(gen.task_config), generator=gen)


def _as_generator(result: Any, ref: str) -> TorchGenerator:
    import torch

    if isinstance(result, tuple) and len(result) in (3, 4):
        result = TorchGenerator(*result)
    if not isinstance(result, TorchGenerator):
        raise SourceError(f"source factory {ref!r} returned {type(result).__name__}; expected "
                          "converters.TorchGenerator or (module, example_inputs, task[, task_config])")
    if not isinstance(result.module, torch.nn.Module):
        raise SourceError(f"source factory {ref!r}: module is a {type(result.module).__name__}, "
                          "not a torch.nn.Module")
    if not isinstance(result.example_inputs, dict) or not result.example_inputs or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in result.example_inputs.items()):
        raise SourceError(f"source factory {ref!r}: example_inputs must be a non-empty dict "
                          "of input name -> torch.Tensor")
    _check_task(result.task, f"source factory {ref!r}")
    if result.task == Task.TEXT:
        raise SourceError(f"source factory {ref!r}: text models convert from a Hugging Face "
                          "directory (save it with model.save_pretrained + tokenizer.json)")
    return result


def _load_onnx(path: Path) -> Source:
    meta: dict[str, Any] | None = None
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json"), path.with_suffix(".toml")):
        if sidecar.is_file():
            try:
                text = sidecar.read_text(encoding="utf-8")
                meta = tomllib.loads(text) if sidecar.suffix == ".toml" else json.loads(text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise SourceError(f"{sidecar}: cannot parse the sidecar: {exc}") from None
            break
    if meta is None:
        raise SourceError(f"{path}: no sidecar with task metadata; write {path.name}.json with "
                          '{"task": "image-generation", "task_config": {...}}')
    if is_piper_voice(meta):
        return load_piper(path, meta)
    task = _check_task(meta.get("task"), f"{path} sidecar")
    return Source("onnx", str(path), meta.get("name") or model_name(path.stem), task,
                  dict(meta.get("task_config", {})), onnx_path=path)


def load_source(ref: str | os.PathLike) -> Source:
    """Load a source from a factory reference, an ``.onnx`` path or a Hugging Face directory;
    its ``task_config`` is checked against the task's schema before any work is done."""
    source = _load(str(ref))
    try:
        parse_task_config(source.task, source.task_config)
    except CorruptBundle as exc:
        raise SourceError(f"{source.ref}: {str(exc).replace('manifest field ', '')}") from None
    return source


def _load(text: str) -> Source:
    path = Path(text)
    if path.is_dir():
        from .hf import load_hf_dir  # transformers is only needed for this kind

        return load_hf_dir(path)
    if path.suffix == ".gguf":
        from .gguf import load_gguf  # gguf and transformers only for this kind

        return load_gguf(path)
    if path.suffix in (".keras", ".h5"):
        from .keras import load_keras  # Keras only for this kind

        return load_keras(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise SourceError(f"{path}: no such ONNX file")
        return _load_onnx(path)
    if ":" in text and not path.exists():
        return _load_factory(text)
    raise SourceError(f"cannot tell what {text!r} is: give package.module:function, "
                      "a .onnx, .gguf or .keras file, or a Hugging Face model directory")
