"""A tiny Piper-shaped voice, built here with onnx.helper: the same inputs (``input``,
``input_lengths``, ``scales``), the same two ``RandomNormalLike`` ops (duration noise over
phonemes, flow noise over frames), durations expanded into frames with CumSum/Range as
Piper's VITS export does, and a waveform ``[1, 1, 1, samples]`` out. Random weights: it
speaks no words, but every step of the speech path runs on it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_aigc.tasks import espeak

HOP, RATE, CHANNELS, SYMBOLS = 8, 16000, 4, 256
SENTENCES = ["Hello there, how are you?", "The birch canoe slid on the smooth planks.",
             "Dr. Smith paid $3.50 for 12 eggs!", "What is the capital of France?"]


def phoneme_id_map(texts=SENTENCES) -> dict[str, list[int]]:
    """Piper's fixed symbols, then every phoneme of ``texts`` in order of appearance."""
    symbols = ["_", "^", "$", " ", "!", "'", "(", ")", ",", "-", ".", ":", ";", "?"]
    for text in texts:
        for sentence in espeak.phonemize(text, "en-us"):
            symbols += [p for p in sentence if p not in symbols]
    return {p: [i] for i, p in enumerate(symbols)}


def build(path: Path, speakers: int = 1, seed: int = 0) -> Path:
    """``path`` (.onnx) and its ``.onnx.json``, as Piper ships a voice."""
    import onnx
    from onnx import TensorProto as T, helper as h

    rng = np.random.default_rng(seed)
    init = [h.make_tensor(n, T.FLOAT, a.shape, a.ravel()) for n, a in {
        "emb": rng.standard_normal((SYMBOLS, CHANNELS)).astype(np.float32),
        "dec": (rng.standard_normal((CHANNELS, HOP)) * 0.5).astype(np.float32),
        "spk": rng.standard_normal((max(speakers, 1), CHANNELS)).astype(np.float32)}.items()]
    ints = {"i0": [0], "i1": [1], "i2": [2], "ax1": [1], "ax0": [0], "two_ch": [2], "minus1": [-1],
            "shape4": [1, 1, 1, -1]}
    init += [h.make_tensor(n, T.INT64, [len(v)], v) for n, v in ints.items()]
    init += [h.make_tensor(n, T.FLOAT, [], [v]) for n, v in {"tenth": 0.1, "two": 2.0, "f0": 0.0}.items()]
    init += [h.make_tensor("zero", T.INT64, [], [0]), h.make_tensor("one", T.INT64, [], [1])]
    n = h.make_node
    nodes = [
        n("Gather", ["emb", "input"], ["x_tc0" if speakers > 1 else "x_tc"]),       # [1, T, C]
        *([n("Gather", ["spk", "sid"], ["s"]), n("Unsqueeze", ["s", "ax1"], ["s1"]),  # + the speaker's vector
           n("Add", ["x_tc0", "s1"], ["x_tc"])] if speakers > 1 else []),
        n("Transpose", ["x_tc"], ["x"], perm=[0, 2, 1]),                              # [1, C, T]
        n("Gather", ["scales", "zero"], ["noise_scale"]), n("Gather", ["scales", "one"], ["length_scale"]),
        n("Gather", ["scales", "i2"], ["noise_w0"]), n("Squeeze", ["noise_w0"], ["noise_w"]),
        n("Slice", ["x", "i0", "two_ch", "ax1"], ["x2"]),                  # [1, 2, T]
        n("RandomNormalLike", ["x2"], ["z_dp"], dtype=T.FLOAT),
        n("Mul", ["z_dp", "noise_w"], ["z_dp_w"]), n("Add", ["x2", "z_dp_w"], ["dp_in"]),
        n("ReduceSum", ["dp_in", "ax1"], ["logw0"], keepdims=0), n("Mul", ["logw0", "tenth"], ["logw1"]),
        n("Cast", ["input_lengths"], ["len_f"], to=T.FLOAT), n("Div", ["len_f", "len_f"], ["len_one"]),
        n("Mul", ["logw1", "len_one"], ["logw"]),                          # uses input_lengths, as VITS masks do
        n("Exp", ["logw"], ["w0"]), n("Mul", ["w0", "length_scale"], ["w1"]), n("Mul", ["w1", "two"], ["w2"]),
        n("Ceil", ["w2"], ["w3"]), n("Max", ["w3", "two"], ["w4"]), n("Cast", ["w4"], ["dur"], to=T.INT64),
        n("CumSum", ["dur", "one"], ["cum"]), n("ReduceSum", ["dur"], ["frames0"], keepdims=0),
        n("Range", ["zero", "frames0", "one"], ["f"]), n("Unsqueeze", ["f", "ax1"], ["f1"]),   # [F, 1]
        n("Squeeze", ["cum", "ax0"], ["cum1"]), n("LessOrEqual", ["cum1", "f1"], ["past"]),    # [F, T]
        n("Cast", ["past"], ["past_i"], to=T.INT64), n("ReduceSum", ["past_i", "ax1"], ["tok"], keepdims=0),
        n("Squeeze", ["x_tc", "ax0"], ["x_t"]),
        n("Gather", ["x_t", "tok"], ["m0"]), n("Unsqueeze", ["m0", "ax0"], ["m1"]),            # [1, F, C]
        n("Transpose", ["m1"], ["m_p"], perm=[0, 2, 1]),                                        # [1, C, F]
        n("RandomNormalLike", ["m_p"], ["z_flow"], dtype=T.FLOAT),
        n("Mul", ["z_flow", "noise_scale"], ["z_s"]), n("Add", ["m_p", "z_s"], ["z_p"]),
        n("Transpose", ["z_p"], ["z_fc"], perm=[0, 2, 1]), n("MatMul", ["z_fc", "dec"], ["y0"]),
        n("Tanh", ["y0"], ["y1"]), n("Reshape", ["y1", "shape4"], ["output"]),
    ]
    inputs = [h.make_tensor_value_info("input", T.INT64, [1, "phonemes"]),
              h.make_tensor_value_info("input_lengths", T.INT64, [1]),
              h.make_tensor_value_info("scales", T.FLOAT, [3])]
    if speakers > 1:
        inputs.append(h.make_tensor_value_info("sid", T.INT64, [1]))
    graph = h.make_graph(nodes, "tiny-voice", inputs,
                         [h.make_tensor_value_info("output", T.FLOAT, [1, 1, 1, "samples"])], init)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    names = {f"speaker_{i}": i for i in range(speakers)} if speakers > 1 else {}
    path.with_name(path.name + ".json").write_text(json.dumps({
        "audio": {"sample_rate": RATE, "quality": "x_low"}, "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8}, "phoneme_type": "espeak",
        "phoneme_map": {}, "phoneme_id_map": phoneme_id_map(), "num_symbols": SYMBOLS, "num_speakers": speakers,
        "speaker_id_map": names, "hop_length": HOP, "piper_version": "1.0.0"}))
    return path
