"""Piper voices as a source: ``voice.onnx`` + ``voice.onnx.json`` (a VITS model exported by Piper).

The voice's JSON gives the speech task's config (sample rate, espeak voice, phoneme id map,
speakers, inference defaults). The graph's two ``RandomNormalLike`` ops — the duration
predictor's noise over phonemes and the flow's noise over frames — become graph inputs
(:func:`noise_as_inputs`), so the runtime feeds seeded noise: a ``seed`` gives the same
speech every time, and the gate compares recipes on identical noise. The frame count is
only known inside the graph, so the frame noise the runtime sends is an estimate and the
graph tiles it to the length it needs (a repeat only past the estimate, which is an upper
bound measured on the gate's sentences).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_aigc.tasks import espeak
from edge_aigc.contract import Task
from edge_aigc.errors import SourceError

from ..cache import cache_root
from .types import Source, model_name

__all__ = ["is_piper_voice", "load_piper", "noise_as_inputs", "gate_sentences"]

GATE_SENTENCES = Path(__file__).parents[1] / "gate_sentences.json"


def gate_sentences() -> list[str]:
    """Real sentences the voice gate speaks (docs/converting.md says where they come from)."""
    return json.loads(GATE_SENTENCES.read_text(encoding="utf-8"))["sentences"]


def is_piper_voice(sidecar: dict[str, Any]) -> bool:
    return "phoneme_id_map" in sidecar and "espeak" in sidecar


def _config(path: Path, voice: dict[str, Any]) -> dict[str, Any]:
    kind = voice.get("phoneme_type", "espeak")
    if kind != "espeak":
        raise SourceError(f"{path}: phoneme_type {kind!r} is not supported (only espeak voices; "
                          "Piper's pinyin, Japanese, Thai and text voices need its own phonemizers)")
    if voice.get("vowel_clusters"):
        raise SourceError(f"{path}: voices with vowel_clusters are not supported yet")
    try:
        return {"sample_rate": int(voice["audio"]["sample_rate"]), "espeak_voice": str(voice["espeak"]["voice"]),
                "phoneme_id_map": {k: list(v) for k, v in voice["phoneme_id_map"].items()},
                "hop_length": int(voice.get("hop_length", 256)), "num_speakers": int(voice.get("num_speakers", 1)),
                "speaker_id_map": dict(voice.get("speaker_id_map") or {}),
                "inference": {k: float(v) for k, v in (voice.get("inference") or {}).items()
                              if k in ("noise_scale", "length_scale", "noise_w")}}
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{path}: not a Piper voice config ({type(exc).__name__}: {exc})") from None


def noise_as_inputs(model, probe: dict[str, np.ndarray]):
    """Replace each ``RandomNormalLike(x)`` with ``Slice(Tile(noise_i), Shape(x))``, ``noise_i`` a
    new input of shape [1, channels, n]; returns the model and {name: [channels, axis]},
    axis "phonemes" when the noise spans the input ids, else "frames"."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = model.graph
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if not randoms:
        raise SourceError("the voice has no RandomNormalLike ops; not a Piper VITS export")
    probe_model = onnx.ModelProto()
    probe_model.CopyFrom(model)
    for n in randoms:
        probe_model.graph.output.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe_model.SerializeToString(), providers=["CPUExecutionProvider"])
    shapes = dict(zip([o.name for o in session.get_outputs()], [a.shape for a in session.run(None, probe)]))
    specs: dict[str, list] = {}
    for i, node in enumerate(randoms):
        shape = shapes[node.output[0]]
        if len(shape) != 3 or shape[0] != 1:
            raise SourceError(f"RandomNormalLike {node.name!r} makes shape {shape}; expected [1, channels, length]")
        name, x, y = f"noise_{i}", node.input[0], node.output[0]
        specs[name] = [int(shape[1]), "phonemes" if shape[2] == probe["input"].shape[1] else "frames"]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, shape[1], f"noise_{i}_len"]))
        p = f"/noise_{i}/"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out = y if not ({"mean", "scale"} & set(attrs)) else p + "unit"
        new = [helper.make_node("Shape", [x], [p + "want"]), helper.make_node("Shape", [name], [p + "have"]),
               helper.make_node("Add", [p + "want", p + "have"], [p + "sum"]),
               helper.make_node("Sub", [p + "sum", p + "one"], [p + "up"]),
               helper.make_node("Div", [p + "up", p + "have"], [p + "reps"]),
               helper.make_node("Tile", [name, p + "reps"], [p + "tiled"]),
               helper.make_node("Slice", [p + "tiled", p + "zeros", p + "want"], [out])]
        graph.initializer.extend([helper.make_tensor(p + "one", TensorProto.INT64, [1], [1]),
                                  helper.make_tensor(p + "zeros", TensorProto.INT64, [3], [0, 0, 0])])
        if out != y:
            new += [helper.make_node("Mul", [out, p + "scale"], [p + "scaled"]),
                    helper.make_node("Add", [p + "scaled", p + "mean"], [y])]
            graph.initializer.extend([helper.make_tensor(p + "scale", TensorProto.FLOAT, [], [attrs.get("scale", 1.0)]),
                                      helper.make_tensor(p + "mean", TensorProto.FLOAT, [], [attrs.get("mean", 0.0)])])
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
    return model, specs


def _probe(config: dict[str, Any]) -> dict[str, np.ndarray]:
    ids, _ = espeak.phoneme_ids(espeak.phonemize("Hello there.", config["espeak_voice"])[0], config["phoneme_id_map"])
    feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
             "scales": np.array([0.667, 1.0, 0.8], np.float32)}
    if config["num_speakers"] > 1:
        feeds["sid"] = np.array([0], np.int64)
    return feeds


def _frames_per_id(path: Path, config: dict[str, Any]) -> float:
    """An upper estimate of frames per phoneme id: the most the gate's sentences need, plus a
    quarter (at length_scale 1, the voice's noise defaults)."""
    import onnxruntime as ort

    from edge_aigc.bundle.task_config import parse_task_config
    from edge_aigc.tasks.speech import DEFAULTS, voice_feeds

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng, most = np.random.default_rng(0), 0.0
    cfg = parse_task_config(Task.SPEECH, {**config, "frames_per_id": 1.0})
    scales = {**DEFAULTS, **cfg.inference, "length_scale": 1.0}
    for text in gate_sentences():
        for phonemes in espeak.phonemize(text, cfg.espeak_voice):
            ids, _ = espeak.phoneme_ids(phonemes, cfg.phoneme_id_map)
            feeds = voice_feeds(cfg, ids, scales, rng, 0 if cfg.num_speakers > 1 else None)
            samples = session.run(None, feeds)[0].size
            most = max(most, samples / config["hop_length"] / len(ids))
    return round(most * 1.25, 3)


def load_piper(path: Path, voice: dict[str, Any]) -> Source:
    """The voice at ``path`` (its JSON already parsed), with the noise rewritten as inputs
    into the converter cache (keyed by the file's sha256)."""
    import onnx

    config = _config(path, voice)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dst = cache_root() / "piper" / f"{digest[:16]}-seeded.onnx"
    spec_file = dst.with_suffix(".json")
    if not (dst.is_file() and spec_file.is_file()):
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and others for a bad file
            raise SourceError(f"{path}: not a valid ONNX model: {exc}") from None
        try:
            model, specs = noise_as_inputs(model, _probe(config))
            dst.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(dst))
            facts = {"noise_inputs": specs, "frames_per_id": _frames_per_id(dst, {**config, "noise_inputs": specs})}
        except SourceError:
            raise
        except Exception as exc:  # onnxruntime's errors for a graph that does not take Piper's inputs
            dst.unlink(missing_ok=True)
            raise SourceError(f"{path}: does not run as a Piper voice ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]})") from None
        spec_file.write_text(json.dumps(facts))
    config.update(json.loads(spec_file.read_text()))
    config["phonemizer"] = espeak.espeak_version()
    name = model_name(path.name.removesuffix(".onnx"))
    return Source("onnx", str(path), name, Task.SPEECH, config, onnx_path=dst,
                  origin={"piper_voice": path.name, "voice_sha256": digest,
                          "piper_version": str(voice.get("piper_version", ""))})
