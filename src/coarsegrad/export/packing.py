"""Bit packing of b-bit activation codes: 8/w codes per byte.

A code c ∈ 0..2^b − 1 is stored in w bits, w = the smallest of 1, 2, 4, 8 with w ≥ b
(so b = 3 packs as 4, b = 5..7 as 8). Code i lives in byte ⌊i/k⌋ (k = 8/w) at bits
[w·(i mod k), w·(i mod k) + w), least significant first; a last partial byte is
padded with zeros. ``pack_codes`` ∘ ``unpack_codes`` is the identity.
"""

from __future__ import annotations

import numpy as np

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.quant.staircase import check_bits
from coarsegrad.validate import integer


def packed_width(bits: int) -> int:
    """w = min{w ∈ (1, 2, 4, 8) : w ≥ b}."""
    bits = check_bits(bits)
    return next(w for w in (1, 2, 4, 8) if w >= bits)


def packed_size(count: int, bits: int) -> int:
    """Bytes for ``count`` codes: ⌈count·w/8⌉."""
    per_byte = 8 // packed_width(bits)
    return -(-int(count) // per_byte)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack the codes of ``codes`` (any shape, flattened in C order) into uint8 [⌈n·w/8⌉]."""
    width = packed_width(bits)
    flat = np.asarray(codes).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise DataError("codes", f"must be an integer array, got {flat.dtype}")
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise DataError("codes", f"values must lie in 0..{(1 << bits) - 1} for {bits} bits, "
                        f"got {int(flat.min())}..{int(flat.max())}")
    flat = flat.astype(np.uint8)
    if width == 8:
        return flat.copy()
    per_byte = 8 // width
    padded = np.zeros(packed_size(flat.size, bits) * per_byte, dtype=np.uint8)
    padded[: flat.size] = flat
    shifts = (np.arange(per_byte, dtype=np.uint8) * width)
    return np.bitwise_or.reduce(padded.reshape(-1, per_byte) << shifts, axis=1).astype(np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of ``packed`` as uint8 [count] (inverse of :func:`pack_codes`)."""
    width = packed_width(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise DataError("packed", f"must be a 1-D uint8 array, got {packed.dtype} {packed.shape}")
    try:
        integer("count", int(count) if isinstance(count, np.integer) else count, lo=0)
    except ConfigError as exc:
        raise DataError("count", str(exc).split(": ", 1)[1]) from None
    if packed.size != packed_size(count, bits):
        raise DataError("packed", f"{packed.size} bytes do not hold {count} codes of {width} bits "
                        f"(expected {packed_size(count, bits)})")
    if width == 8:
        codes = packed.copy()
    else:
        per_byte = 8 // width
        shifts = (np.arange(per_byte, dtype=np.uint8) * width)
        mask = np.uint8((1 << width) - 1)
        codes = ((packed[:, None] >> shifts) & mask).reshape(-1)[: int(count)]
    if codes.size and int(codes.max()) >= 1 << bits:
        raise DataError("packed", f"holds a code above {(1 << bits) - 1} for {bits} bits")
    return codes
