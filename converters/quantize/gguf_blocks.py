"""Keep a GGUF file's quantized weights: its blocks copied into the fused graph.

A GGUF model is usually quantized already (SmolLM2-135M-Instruct ships as Q4_1, most
published files as Q4_K_M). Its float32 reference is those blocks dequantized, so
quantizing that again to int4 rounds twice: on SmolLM2 the builder's symmetric int4 lost
35% perplexity and a third of the known answers. llama.cpp's block types (Q4_0, Q4_1, Q5_0,
Q8_0, Q4_K, Q5_K, Q6_K) fit ONNX Runtime's ``MatMulNBits`` (one scale per block of 16 or 32
along K, 4 or 8 bits, integer zero points) without rounding anything; how each maps is in
converters/quantize/gguf_read.py. The parts of a fused matrix (Q, K and V; gate and up) of
different types become 8-bit blocks of the smallest block size, still exact.

A per-block minimum ``m`` (Q4_1, Q4_K, Q5_K) has no integer zero point, and a float one sends ONNX
Runtime to its slow unpacked path; so each block gets the integer zero point nearest its
own zero, z = round(−m/d), and what is left, r = m + z·d (at most half a step), is applied
as a small extra product — the activations summed per block ([…, K/32]) times the
residuals ([K/32, N], 1/32 of the weights) — added to the 4-bit product. The centred zero
point matters with int8 activations (accuracy level 4): the kernel's activation rounding
error is multiplied by q − z, so with z = 0 (q all positive, the minimum carried whole by
the extra term) it is not cancelled by the block's signs and SmolLM2 measured 4× the KL. The graph is the builder's int4 graph (names,
fused attention and all); only the weights of the matrices the file holds in these
formats are replaced, and a tied embedding follows its LM head.

Llama files store Q and K rows permuted for llama.cpp's rotary layout (transformers
undoes it on load); rows are output channels, so the blocks are reordered back exactly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .gguf_read import KNOWN_TYPES, Blocks, concat, read_blocks, unpermute

__all__ = ["GgufImport", "import_gguf_blocks", "SUPPORTED_ARCHITECTURES", "BLOCK"]

BLOCK = 32          # the builder's int4 block, which the file's blocks replace
REFINE_TOP_K = 64   # an 8-bit head's best logits, recomputed with float32 activations
# llama.cpp's tensor names are the same for these; its converter permutes Llama's Q and K rows only
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
PERMUTED = ("llama",)
_LAYER = {"qkv_proj": ("attn_q", "attn_k", "attn_v"), "q_proj": ("attn_q",), "k_proj": ("attn_k",),
          "v_proj": ("attn_v",), "o_proj": ("attn_output",), "gate_proj": ("ffn_gate",),
          "up_proj": ("ffn_up",), "down_proj": ("ffn_down",)}
_NODE = re.compile(r"^/model/layers\.(\d+)/(?:attn|mlp)/(\w+?)/MatMul")


@dataclass
class GgufImport:
    """What was copied: matrices kept exactly, and those left as the builder quantized them (why)."""
    kept: list[str] = field(default_factory=list)
    requantized: dict[str, str] = field(default_factory=dict)
    embedding_follows_head: bool = False
    head_refined: int = 0

    def summary(self) -> str:
        text = f"{len(self.kept)} matrices kept as the file's blocks"
        if self.requantized:
            reasons = sorted(set(self.requantized.values()))
            text += f", {len(self.requantized)} requantized ({'; '.join(reasons)})"
        text += ", embedding tied to the head" if self.embedding_follows_head else ""
        return text + (f", head's top {self.head_refined} logits exact" if self.head_refined else "")


def _pack(blocks: Blocks) -> np.ndarray:
    if blocks.bits == 8:
        return blocks.q
    return (blocks.q[..., 0::2] | (blocks.q[..., 1::2] << 4)).astype(np.uint8)  # ONNX: element 2i low


def _promote(blocks: Blocks) -> Blocks:
    """4-bit blocks as 8-bit ones of the same values (q and the default zero point + 120)."""
    if blocks.bits == 8:
        return blocks
    return Blocks(8, blocks.block, blocks.q if blocks.minimum is not None else blocks.q + 120,
                  blocks.scale, blocks.minimum)


def _split(blocks: Blocks, block: int) -> Blocks:
    """Blocks of ``block`` weights, each with its parent block's scale (and minimum)."""
    if blocks.block == block:
        return blocks
    times, rows = blocks.block // block, blocks.rows
    minimum = None if blocks.minimum is None else np.repeat(blocks.minimum, times, axis=1)
    return Blocks(blocks.bits, block, blocks.q.reshape(rows, -1, block), np.repeat(blocks.scale, times, axis=1),
                  minimum)


def _join(parts: list[Blocks]) -> Blocks:
    """Parts stacked along the rows; parts of different widths or block sizes become 8-bit
    blocks of the smallest size first (exact: only the storage grows)."""
    joined = concat(parts)
    if joined is None:
        block = min(p.block for p in parts)
        joined = concat([_split(_promote(p), block) for p in parts])
    return joined


def _field(reader, key: str):
    return reader.fields[key].contents()


class _GgufFile:
    """A GGUF file's tensors, as the 4- or 8-bit blocks of the ONNX products they replace."""

    def __init__(self, reader, arch: str):
        self.arch = arch
        self.num_heads = int(_field(reader, f"{arch}.attention.head_count"))
        self.num_kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv"))
        self.tensors = {t.name: t for t in reader.tensors}

    def names_for(self, node) -> tuple[str, ...] | None:
        """The file's tensors behind a MatMulNBits node of the builder's graph (None: none)."""
        if node.name.startswith("/lm_head/MatMul"):
            return ("output.weight",) if "output.weight" in self.tensors else ("token_embd.weight",)
        if (match := _NODE.match(node.name)) and match.group(2) in _LAYER:
            return tuple(f"blk.{match.group(1)}.{part}.weight" for part in _LAYER[match.group(2)])
        return None

    def blocks_for(self, names: tuple[str, ...]) -> Blocks | str:
        """The tensors' blocks, concatenated along the output rows; a string says why not."""
        parts = []
        for name in names:
            tensor = self.tensors.get(name)
            if tensor is None:
                return f"{name} not in the file"
            blocks = read_blocks(tensor)
            if blocks is None:
                return f"{tensor.tensor_type.name} blocks (kept exactly: {', '.join(KNOWN_TYPES)})"
            if self.arch in PERMUTED and name.endswith(("attn_q.weight", "attn_k.weight")):
                blocks = unpermute(blocks, self.num_heads if "attn_q" in name else self.num_kv_heads)
            parts.append(blocks)
        return _join(parts)


def _node_blocks(file: _GgufFile, node, attrs) -> Blocks | str:
    """The blocks that replace ``node``'s weight, or why they cannot."""
    if attrs["block_size"].i != BLOCK:
        return f"block size {attrs['block_size'].i}, not {BLOCK}"
    names = file.names_for(node)
    if names is None:
        return "no GGUF tensor for this node"
    blocks = file.blocks_for(names)
    if isinstance(blocks, str):
        return blocks
    if (blocks.rows, blocks.columns) != (attrs["N"].i, attrs["K"].i):
        return f"shape {blocks.rows}x{blocks.columns} in the file"
    if node.name.startswith("/lm_head/") and blocks.minimum is not None:
        return "a head with per-block minima (its tied embedding cannot read them)"
    return blocks


def _replace_weight(graph, inits: dict, node, attrs, blocks: Blocks, accuracy_level: int) -> str:
    """``node`` computes with ``blocks``; returns its new weight's name."""
    from onnx import TensorProto, helper, numpy_helper

    weight, scales = node.input[1], node.input[2]
    new_weight = weight.rsplit("_Q", 1)[0] + f"_Q{blocks.bits}"
    graph.initializer.remove(inits.pop(weight))
    graph.initializer.append(numpy_helper.from_array(_pack(blocks), new_weight))
    inits[new_weight] = graph.initializer[-1]
    inits[scales].CopyFrom(numpy_helper.from_array(blocks.scale, scales))
    node.input[1] = new_weight
    attrs["bits"].i, attrs["block_size"].i = blocks.bits, blocks.block
    attrs["accuracy_level"].i = accuracy_level if blocks.bits == 4 else 4
    if blocks.minimum is not None:
        _add_minimum_term(graph, node, blocks, helper, numpy_helper, TensorProto)
    for other in graph.node:  # the embedding's Reshape of a tied head's weight
        for i, name in enumerate(other.input):
            if name == weight and other is not node:
                other.input[i] = new_weight
    return new_weight


def import_gguf_blocks(model_path: Path, gguf_path: Path, accuracy_level: int = 4) -> GgufImport:
    """Rewrite the builder's int4 ``model_path`` in place with the weights of ``gguf_path``.

    ``accuracy_level`` is set on the 4-bit products (1: float32 activations; 4: int8). The
    8-bit ones keep 4: ONNX Runtime has no fast float32-activation kernel for 8-bit weights
    (SmolLM2 decoded at 7.6 tokens/s with its Q8_0 head at level 1, 21 with it at 4).
    """
    import gguf
    import onnx
    from onnx import helper, numpy_helper

    reader = gguf.GGUFReader(str(gguf_path))
    arch = str(_field(reader, "general.architecture"))
    if arch not in SUPPORTED_ARCHITECTURES:
        return GgufImport(requantized={"*": f"architecture {arch} (blocks are imported for "
                                             f"{', '.join(SUPPORTED_ARCHITECTURES)})"})
    file = _GgufFile(reader, arch)
    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    report, head = GgufImport(), None
    for node in [n for n in graph.node if n.op_type == "MatMulNBits"]:
        attrs = {a.name: a for a in node.attribute}
        blocks = _node_blocks(file, node, attrs)
        if isinstance(blocks, str):
            report.requantized[node.name] = blocks
            continue
        new_weight = _replace_weight(graph, inits, node, attrs, blocks, accuracy_level)
        if node.name.startswith("/lm_head/"):
            head = new_weight, node
        report.kept.append(node.name)
    if head is not None:
        report.embedding_follows_head = _retie_embedding(graph, head[0], inits, helper, numpy_helper)
    embedding = file.tensors.get("token_embd.weight")
    if not report.embedding_follows_head and embedding is not None and read_blocks(embedding) is not None:
        report.requantized["/model/embed_tokens"] = "an untied embedding: the builder's own int4 of its values"
        if head[0].endswith("_Q8"):
            _refine_head(graph, head[1], inits, helper, numpy_helper)
            report.head_refined = REFINE_TOP_K
    _toposort(graph)
    onnx.save(model, str(model_path))
    return report


def _add_minimum_term(graph, node, blocks: Blocks, helper, numpy_helper, TensorProto) -> None:
    """Zero point z = round(−m/d) for the 4-bit product, then + (A summed per block) @ r with
    r = m + z·d: d·(q − z) + r = d·q + m (r held in float16, within 2⁻¹¹ of itself)."""
    rows, count = blocks.scale.shape
    base, top = node.name, (1 << blocks.bits) - 1
    zero = np.clip(np.rint(-np.divide(blocks.minimum, blocks.scale, out=np.zeros_like(blocks.minimum),
                                      where=blocks.scale != 0)), 0, top).astype(np.uint8)
    residual = blocks.minimum + zero * blocks.scale
    if blocks.bits == 8:
        zero_points = zero
    else:
        if count % 2:
            zero = np.pad(zero, ((0, 0), (0, 1)))
        zero_points = (zero[:, 0::2] | (zero[:, 1::2] << 4)).astype(np.uint8)  # block 2i in the low nibble
    zp_name, minima_name = f"{node.input[1]}_zero_points", f"{node.input[1]}_block_minima"
    graph.initializer.extend([numpy_helper.from_array(zero_points, zp_name),
                              numpy_helper.from_array(residual.T.astype(np.float16), minima_name),
                              numpy_helper.from_array(np.array([0, 0, count, blocks.block], np.int64),
                                                      f"{base}/block_shape"),
                              numpy_helper.from_array(np.array([-1], np.int64), f"{base}/last_axis")])
    while len(node.input) < 4:
        node.input.append("")
    node.input[3] = zp_name
    out = node.output[0]
    node.output[0] = f"{base}/without_minima"
    graph.node.extend([
        helper.make_node("Reshape", [node.input[0], f"{base}/block_shape"], [f"{base}/blocks"], name=f"{base}/blocks"),
        helper.make_node("ReduceSum", [f"{base}/blocks", f"{base}/last_axis"], [f"{base}/block_sums"],
                         keepdims=0, name=f"{base}/block_sums"),
        helper.make_node("Cast", [minima_name], [f"{base}/minima"], to=TensorProto.FLOAT, name=f"{base}/minima"),
        helper.make_node("MatMul", [f"{base}/block_sums", f"{base}/minima"], [f"{base}/minima_term"],
                         name=f"{base}/minima_term"),
        helper.make_node("Add", [f"{base}/without_minima", f"{base}/minima_term"], [out], name=f"{base}/add_minima"),
    ])


def _refine_head(graph, node, inits, helper, numpy_helper) -> None:
    """An 8-bit head at accuracy level 4 (int8 activations; level 1 ran 3x slower) gets its
    ``REFINE_TOP_K`` largest logits recomputed exactly: those rows of the head gathered
    (GatherBlockQuantized reads the same 8-bit blocks, so no weight is stored twice) times
    the float32 hidden state, scattered back. Greedy choice and the likely tokens' logits
    are then the float32 ones; measured on SmolLM2: the int8 head alone flipped "Paris"."""
    weight, scales = node.input[1], node.input[2]
    rows, count, block = inits[weight].dims   # 8-bit: a block's bytes are its weights
    base, out, hidden = node.name, node.output[0], node.input[0]
    zp = f"{weight}/gather_zero_points"  # the tied embedding's, when there is one
    if zp not in {t.name for t in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(np.full((rows, count), 128, np.uint8), zp))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([rows, count * block], np.int64), f"{base}/table_shape"),
        numpy_helper.from_array(np.array([REFINE_TOP_K], np.int64), f"{base}/k"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{base}/minus_one")])
    node.output[0] = f"{base}/approximate"
    graph.node.extend([
        helper.make_node("TopK", [f"{base}/approximate", f"{base}/k"], [f"{base}/top", f"{base}/top_ids"],
                         axis=-1, name=f"{base}/top_k"),
        helper.make_node("Reshape", [weight, f"{base}/table_shape"], [f"{base}/table"], name=f"{base}/table"),
        helper.make_node("GatherBlockQuantized", [f"{base}/table", f"{base}/top_ids", scales, zp],
                         [f"{base}/top_rows"], domain="com.microsoft", bits=8, block_size=block,
                         gather_axis=0, quantize_axis=1, name=f"{base}/top_rows"),
        helper.make_node("Unsqueeze", [hidden, f"{base}/minus_one"], [f"{base}/column"], name=f"{base}/column"),
        helper.make_node("MatMul", [f"{base}/top_rows", f"{base}/column"], [f"{base}/exact_column"],
                         name=f"{base}/exact"),
        helper.make_node("Squeeze", [f"{base}/exact_column", f"{base}/minus_one"], [f"{base}/exact_top"],
                         name=f"{base}/exact_top"),
        helper.make_node("ScatterElements", [f"{base}/approximate", f"{base}/top_ids", f"{base}/exact_top"],
                         [out], axis=-1, name=f"{base}/scatter"),
    ])


def _retie_embedding(graph, head_weight: str, inits, helper, numpy_helper) -> bool:
    """Point a GatherBlockQuantized embedding that reads the head's weight at its new bits."""
    bits = 8 if head_weight.endswith("_Q8") else 4
    for node in graph.node:
        if node.op_type != "GatherBlockQuantized":
            continue
        producer = next((n for n in graph.node if n.output and n.output[0] == node.input[0]), None)
        if producer is None or producer.op_type != "Reshape" or producer.input[0] != head_weight:
            continue
        rows, count, blob = inits[head_weight].dims
        shape = numpy_helper.from_array(np.array([rows, count * blob], np.int64),
                                        f"{head_weight}/gather_shape")
        graph.initializer.append(shape)
        producer.input[1] = shape.name
        attrs = {a.name: a for a in node.attribute}
        attrs["bits"].i, attrs["block_size"].i = bits, blob * 8 // bits
        if bits == 8:  # GatherBlockQuantized's default zero point is 0; Q8_0 stored as q + 128
            zp = numpy_helper.from_array(np.full((rows, count), 128, np.uint8), f"{head_weight}/gather_zero_points")
            graph.initializer.append(zp)
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = zp.name
        return True
    return False


def _toposort(graph) -> None:
    """Order nodes so each comes after the producers of its inputs (ONNX requires it; the
    minima terms were appended at the end)."""
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    nodes, order, state = list(graph.node), [], {}

    def visit(i: int) -> None:  # iterative depth-first: the graph is ~600 nodes deep
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if expanded:
                state[j] = True
                order.append(nodes[j])
                continue
            if j in state:
                continue
            state[j] = False
            stack.append((j, True))
            stack.extend((producer[x], False) for x in nodes[j].input if x in producer and producer[x] not in state)

    for i in range(len(nodes)):
        visit(i)
    del graph.node[:]
    graph.node.extend(order)
