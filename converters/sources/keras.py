"""Keras sources: a Keras 3 ``.keras`` file, run on Keras' torch backend and exported as PyTorch.

Keras 3 on the torch backend makes every model a ``torch.nn.Module``, so a ``.keras`` file
takes the same path as a PyTorch factory: ``torch.onnx.export`` for ONNX, ``litert_torch``
for TFLite, and the fidelity gate graded against Keras' own output (the wrapper below calls
the Keras model itself). No TensorFlow is involved.

What is refused, before anything runs, with the layer named:

- a file that is not a Keras 3 zip (a legacy ``.h5``, a SavedModel folder, anything else);
- ``Lambda`` layers (their Python code would run on load) and custom classes, which the
  converter cannot load without the user's code;
- layers that do not run on the torch backend, or whose graph torch cannot capture
  (found by running the model once and capturing it once, layer by layer on failure).

The task is read from a sidecar ``model.keras.json`` (``{"task": ..., "task_config": {...}}``)
or inferred for the common generator shape: a float latent input ``[batch, L]``, optionally
an integer class input ``[batch]`` that feeds an ``Embedding`` (its ``input_dim`` is the number
of classes), and an image output ``[batch, H, W, C]`` (C = 1 or 3; exported as NCHW, as the
runtime reads images) ending in ``tanh`` (range -1..1) or ``sigmoid`` (0..1). Sidecar fields
override what is inferred.
"""
from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from edge_aigc.contract import Task
from edge_aigc.errors import SourceError

from .types import Source, TorchGenerator, model_name

__all__ = ["load_keras"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RANGES = {"tanh": [-1.0, 1.0], "sigmoid": [0.0, 1.0]}
MAX_INPUTS = 4  # KerasModule.forward's parameters


def _keras():
    """Keras on the torch backend (set here unless Keras is already imported with another)."""
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        if keras.backend.backend() != "torch":
            raise SourceError(f"Keras is already imported with the {keras.backend.backend()} backend; "
                              "Keras sources need the torch backend (KERAS_BACKEND=torch)")
        return keras
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise SourceError("Keras sources need Keras 3: pip install -e '.[host,keras]'") from None
    return keras


def _objects(node: Any) -> Iterator[dict]:
    """Every serialized Keras object ({"module", "class_name", "config"}) in a config tree."""
    if isinstance(node, dict):
        if "class_name" in node and "config" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _check_archive(path: Path) -> None:
    if not path.is_file():
        raise SourceError(f"{path}: no such Keras file")
    if path.suffix == ".h5":
        raise SourceError(f"{path}: a legacy HDF5 Keras file; load it in Keras and save it as .keras "
                          "(model.save('model.keras')) to convert it")
    if not zipfile.is_zipfile(path):
        raise SourceError(f"{path}: not a Keras 3 .keras file (a zip archive); re-save the model "
                          "with Keras 3: model.save('model.keras')")
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, ValueError):
            raise SourceError(f"{path}: not a Keras 3 .keras file (no readable config.json inside)") from None
    for obj in _objects(config):
        name = (obj.get("config") or {}).get("name", "?") if isinstance(obj.get("config"), dict) else "?"
        if obj["class_name"] == "Lambda":
            raise SourceError(f"{path}: layer {name!r} is a Lambda layer, whose Python code would run on "
                              "load; it is refused: write it as a built-in layer or keras.ops in a "
                              "registered layer of Keras itself")
        module = obj.get("module") or "keras"
        if not module.startswith("keras"):
            raise SourceError(f"{path}: {name!r} is a custom class ({module}.{obj['class_name']}); only "
                              "built-in Keras layers convert")


def _load_model(keras, path: Path):
    _check_archive(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError... for bad files
        raise SourceError(f"{path}: Keras could not load it: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:400] or type(exc).__name__


class KerasModule(torch.nn.Module):
    """The Keras model (itself a torch module on this backend) called as Keras calls it, in
    inference mode; image outputs turned from Keras' NHWC to the NCHW the runtime reads."""

    def __init__(self, model, nhwc: bool):
        super().__init__()
        self.model, self.nhwc = model, nhwc

    # named positional inputs, not *inputs: torch.export matches dynamic shapes to them
    def forward(self, x0, x1=None, x2=None, x3=None):
        inputs = [x for x in (x0, x1, x2, x3) if x is not None]
        out = self.model(inputs if len(inputs) > 1 else inputs[0], training=False)
        return out.permute(0, 3, 1, 2) if self.nhwc else out


class _OneLayer(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x, training=False)


def _infer_image(model, path: Path) -> tuple[dict, list, bool]:
    """task_config and example inputs for the latent (+ label) -> image shape."""
    floats = [t for t in model.inputs if "float" in str(t.dtype)]
    ints = [t for t in model.inputs if "int" in str(t.dtype)]
    if len(model.outputs) != 1 or len(floats) != 1 or len(ints) > 1 or len(model.inputs) != len(floats) + len(ints):
        raise SourceError(f"{path}: cannot infer the task from inputs {_shapes(model.inputs)} and outputs "
                          f"{_shapes(model.outputs)}; write {path.name}.json with "
                          '{"task": ..., "task_config": {...}}')
    out, latent = model.outputs[0].shape, floats[0].shape
    if len(latent) != 2 or latent[1] is None or len(out) != 4 or out[3] not in (1, 3):
        raise SourceError(f"{path}: not an image generator by shape (latent {latent}, output {out}: "
                          "expected [batch, L] in and [batch, H, W, 1 or 3] out); write "
                          f"{path.name}.json with the task")
    cfg: dict[str, Any] = {"latent_dim": int(latent[1]), "image_size": [int(out[1]), int(out[2])],
                           "channels": int(out[3])}
    activation = _last_activation(model)
    if activation in _RANGES:
        cfg["output_range"] = _RANGES[activation]
    examples = {floats[0].name: torch.zeros(1, int(latent[1]))}
    if ints:
        label = ints[0]
        if tuple(label.shape) not in ((None,), (None, 1)):
            raise SourceError(f"{path}: class input {label.name!r} has shape {label.shape}; expected [batch]")
        classes = _embedding_size(model, label)
        if classes:
            cfg["num_classes"] = classes
            cfg["class_labels"] = [str(i) for i in range(classes)]
        examples[label.name] = torch.zeros((1,) + (1,) * (len(label.shape) - 1), dtype=torch.int32)
    # in the model's input order, which is how the wrapper passes them on
    return cfg, [(t.name, examples[t.name]) for t in model.inputs], True


def _shapes(tensors) -> str:
    return ", ".join(f"{t.name} {tuple(t.shape)} {t.dtype}" for t in tensors)


def _last_activation(model) -> str | None:
    layer = model.outputs[0]._keras_history.operation
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def _embedding_size(model, label) -> int | None:
    keras = sys.modules["keras"]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding) and any(t is label for t in keras.tree.flatten(layer.input)):
            return int(layer.input_dim)
    return None


def _sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{sidecar}: cannot parse the sidecar: {exc}") from None
    if not isinstance(meta, dict):
        raise SourceError(f"{sidecar}: the sidecar must be a JSON object")
    return meta


def _preflight(model, module, args: tuple, path: Path) -> None:
    """Run once and capture once, so that a layer that cannot convert is named up front."""
    try:
        with torch.no_grad():
            module(*args)
    except Exception as exc:
        raise SourceError(f"{path}: the model does not run on Keras' torch backend: {_message(exc)}") from None
    try:
        torch.export.export(module, args)
    except Exception as exc:
        raise SourceError(f"{path}: torch cannot capture the model's graph ({_message(exc)}){_culprit(model)}") from None


def _culprit(model) -> str:
    """The first layer that torch cannot capture on its own, when one alone is to blame."""
    keras = sys.modules["keras"]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inputs = keras.tree.map_structure(
                lambda t: torch.zeros([d or 1 for d in t.shape], dtype=getattr(torch, str(t.dtype))), layer.input)
        except (AttributeError, TypeError):
            continue
        try:
            torch.export.export(_OneLayer(layer), (inputs,))
        except Exception:
            return f"; layer {layer.name!r} ({type(layer).__name__}) does not convert"
    return ""


def load_keras(path: Path) -> Source:
    keras = _keras()
    model = _load_model(keras, path)
    if not 1 <= len(model.inputs) <= MAX_INPUTS:
        raise SourceError(f"{path}: the model has {len(model.inputs)} inputs; Keras sources take 1 to {MAX_INPUTS}")
    meta = _sidecar(path)
    task = meta.get("task", Task.IMAGE)
    if task == Task.IMAGE:
        cfg, examples, nhwc = _infer_image(model, path)
    else:  # the sidecar says what it is; inputs go in as they are, outputs come out as they are
        cfg, nhwc = {}, False
        examples = [(t.name, _example(t)) for t in model.inputs]
    cfg.update(meta.get("task_config", {}))
    module = KerasModule(model, nhwc).eval()
    _preflight(model, module, tuple(t for _, t in examples), path)
    outputs = [t.name for t in model.outputs] if task != Task.IMAGE else ["image"]
    gen = TorchGenerator(module=module, example_inputs=dict(examples), task=task, task_config=cfg,
                         output_names=outputs)
    return Source("keras", str(path), meta.get("name") or model_name(path.stem), task, cfg, generator=gen,
                  origin={"format": "keras", "keras_version": keras.__version__})


def _example(tensor):
    if any(d is None for d in tensor.shape[1:]):
        raise SourceError(f"input {tensor.name!r} has a free dimension besides batch ({tuple(tensor.shape)}); "
                          "save the model with fixed sizes")
    return torch.zeros([1, *tensor.shape[1:]], dtype=getattr(torch, str(tensor.dtype)))
