"""A GGUF tensor's quantized blocks, in the form ONNX Runtime's ``MatMulNBits`` computes with.

Every block type here is a scale (and for some a minimum) per run of 16 or 32 weights along
K times small integers, so it maps onto ``MatMulNBits`` (one scale per block of 16 or 32,
4 or 8 bits, an integer zero point) without rounding anything:

| GGUF type | per block | value | as ``Blocks`` |
|---|---|---|---|
| Q4_0 | 32: d, 4-bit q | d·(q − 8) | 4 bits, block 32, scale d |
| Q4_1 | 32: d, m, 4-bit q | d·q + m | 4 bits, block 32, scale d, minimum m |
| Q5_0 | 32: d, 5-bit q | d·(q − 16) | 8 bits, block 32, q + 112, scale d |
| Q8_0 | 32: d, 8-bit q | d·q | 8 bits, block 32, q + 128, scale d |
| Q4_K | 256 = 8 × 32: d, dmin, 6-bit sc and m each | (d·sc)·q − dmin·m | Q4_1's form per 32 |
| Q5_K | 256 = 8 × 32: as Q4_K, 5-bit q | (d·sc)·q − dmin·m | 8 bits, block 32, with a minimum |
| Q6_K | 256 = 16 × 16: d, 8-bit sc, 6-bit q | (d·sc)·(q − 32) | 8 bits, block 16, q + 96, scale d·sc |

d·sc is a float16 times a small integer, exact in float32. A block without a minimum has
the type's default zero point (8 for 4 bits, 128 for 8); with one, the value is
scale·q + minimum, which the graph applies as an integer zero point plus a small residual
term (converters/quantize/gguf_blocks.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Blocks", "read_blocks", "unpermute", "concat", "KNOWN_TYPES"]

KNOWN_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K")


@dataclass(frozen=True)
class Blocks:
    bits: int                   # 4 or 8
    block: int                  # weights per scale along K: 16 or 32
    q: np.ndarray               # [rows, blocks, block] uint8
    scale: np.ndarray           # [rows, blocks] float32
    minimum: np.ndarray | None  # [rows, blocks] float32: value = scale·q + minimum; None: default zero point

    @property
    def rows(self) -> int:
        return self.q.shape[0]

    @property
    def columns(self) -> int:
        return self.q.shape[1] * self.block

    def with_minimum(self) -> np.ndarray:
        """The minima, also for blocks of the default zero point: d·(q − z) = d·q + (−z·d)."""
        zero = 8 if self.bits == 4 else 128
        return self.minimum if self.minimum is not None else -zero * self.scale

    def values(self) -> np.ndarray:
        """The weights [rows, columns] in float32 (what llama.cpp's dequantization gives)."""
        return (self.q * self.scale[..., None] + self.with_minimum()[..., None]).reshape(self.rows, -1)


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.copy().view(np.float16)[..., 0].astype(np.float32)


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's eight 6-bit scales and minima per super-block (llama.cpp's get_scale_min_k4)."""
    d, m, both = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([d & 0x3F, (both & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (both >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _nibbles(packed: np.ndarray, width: int) -> np.ndarray:
    """llama.cpp's 4-bit layout: per ``width`` bytes, ``width`` low nibbles then ``width`` high ones."""
    groups = packed.reshape(*packed.shape[:-1], -1, width)
    return np.stack([groups & 0x0F, groups >> 4], axis=-2).reshape(*packed.shape[:-1], -1)


def _k_quant(raw: np.ndarray, five: bool) -> Blocks:
    rows, supers = raw.shape[:2]
    d, dmin = _f16(raw[..., 0:2]), _f16(raw[..., 2:4])
    sc, mn = _k_scales(raw[..., 4:16])
    if five:
        qh, qs = raw[..., 16:48], raw[..., 48:176]
        high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1   # [.., 8 sub-blocks, 32]
        q = _nibbles(qs, 32).reshape(rows, supers, 8, 32) | (high << 4)
    else:
        q = _nibbles(raw[..., 16:144], 32).reshape(rows, supers, 8, 32)
    scale = (d[..., None] * sc).reshape(rows, -1)
    minimum = -(dmin[..., None] * mn).reshape(rows, -1)
    return Blocks(8 if five else 4, 32, q.reshape(rows, -1, 32).astype(np.uint8), scale, minimum)


def _q6_k(raw: np.ndarray) -> Blocks:
    rows, supers = raw.shape[:2]
    ql, qh = raw[..., 0:128], raw[..., 128:192]
    sc, d = raw[..., 192:208].view(np.int8).astype(np.float32), _f16(raw[..., 208:210])
    low = _nibbles(ql, 64).reshape(rows, supers, 2, 128)                          # per 128: 4 × 32
    high = (qh.reshape(rows, supers, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3
    q = low | (high.reshape(rows, supers, 2, 128) << 4)
    return Blocks(8, 16, (q.reshape(rows, -1, 16) + 96).astype(np.uint8), (d[..., None] * sc).reshape(rows, -1), None)


def read_blocks(tensor) -> Blocks | None:
    """The tensor's blocks, or None for a type not in ``KNOWN_TYPES``."""
    import gguf

    name = tensor.tensor_type.name
    if name not in KNOWN_TYPES:
        return None
    rows = tensor.data.shape[0]
    raw = np.ascontiguousarray(tensor.data).reshape(rows, -1, gguf.GGML_QUANT_SIZES[tensor.tensor_type][1])
    if name in ("Q4_K", "Q5_K"):
        return _k_quant(raw, name == "Q5_K")
    if name == "Q6_K":
        return _q6_k(raw)
    d = _f16(raw[..., 0:2])
    if name == "Q8_0":
        return Blocks(8, 32, (raw[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8), d, None)
    if name == "Q5_0":
        high = (raw[..., 2:6].copy().view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1
        q = _nibbles(raw[..., 6:22], 16) | (high.astype(np.uint8) << 4)
        return Blocks(8, 32, (q + 112).astype(np.uint8), d, None)
    start = 2 if name == "Q4_0" else 4
    q = _nibbles(raw[..., start:start + 16], 16)
    return Blocks(4, 32, q.astype(np.uint8), d, None if name == "Q4_0" else _f16(raw[..., 2:4]))


def unpermute(blocks: Blocks, heads: int) -> Blocks:
    """Undo llama.cpp's rotary row order of a Llama Q or K matrix (rows are output channels)."""
    forward = np.arange(blocks.rows).reshape(heads, 2, blocks.rows // heads // 2).swapaxes(1, 2).reshape(-1)
    order = np.argsort(forward)
    return Blocks(blocks.bits, blocks.block, blocks.q[order], blocks.scale[order],
                  None if blocks.minimum is None else blocks.minimum[order])


def concat(parts: list[Blocks]) -> Blocks | None:
    """Parts of one bit width and block size stacked along the rows; None when they differ."""
    if len({(p.bits, p.block) for p in parts}) > 1:
        return None
    minimum = np.concatenate([p.with_minimum() for p in parts]) \
        if any(p.minimum is not None for p in parts) else None
    return Blocks(parts[0].bits, parts[0].block, np.concatenate([p.q for p in parts]),
                  np.concatenate([p.scale for p in parts]), minimum)
