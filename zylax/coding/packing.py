"""Bit-packed storage of binary (1 bit) and ternary (2 bits) weights.

* ``pack_binary(signs)``: +1 -> bit 1, -1 -> bit 0, 8 weights per byte.
* ``pack_ternary(values)``: {-1, 0, +1} -> 2-bit codes {2, 0, 1}, 4 weights per byte.
Unpacking needs the shape and is exact.
"""

from __future__ import annotations

import numpy as np


def pack_binary(signs) -> np.ndarray:
    """Packs an array of +1/-1 into uint8 (1 bit per weight, MSB first)."""
    signs = np.asarray(signs)
    if not np.all(np.abs(signs) == 1):
        raise ValueError("pack_binary expects only +1 and -1")
    return np.packbits(signs.ravel() > 0)


def unpack_binary(packed, shape) -> np.ndarray:
    """Inverse of ``pack_binary``: float32 +1/-1 of ``shape``."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(packed, np.uint8), count=n)
    return np.where(bits == 1, 1.0, -1.0).astype(np.float32).reshape(shape)


def pack_ternary(values) -> np.ndarray:
    """Packs an array of -1/0/+1 into uint8 (2 bits per weight)."""
    values = np.asarray(values).ravel()
    if not np.all(np.isin(values, (-1, 0, 1))):
        raise ValueError("pack_ternary expects only -1, 0 and +1")
    codes = np.where(values > 0, 1, np.where(values < 0, 2, 0)).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-codes.size) % 4, np.uint8)]).reshape(-1, 4)
    return (codes[:, 0] << 6 | codes[:, 1] << 4 | codes[:, 2] << 2 | codes[:, 3]).astype(np.uint8)


def unpack_ternary(packed, shape) -> np.ndarray:
    """Inverse of ``pack_ternary``: float32 -1/0/+1 of ``shape``."""
    packed = np.asarray(packed, np.uint8)
    codes = np.stack([(packed >> s) & 3 for s in (6, 4, 2, 0)], axis=1).ravel()
    n = int(np.prod(shape))
    if codes.size < n or np.any(codes == 3):
        raise ValueError("packed ternary data is too short or holds the invalid code 3")
    codes = codes[:n]
    return np.where(codes == 1, 1.0, np.where(codes == 2, -1.0, 0.0)).astype(np.float32
                                                                            ).reshape(shape)
