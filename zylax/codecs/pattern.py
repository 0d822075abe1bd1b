"""``pattern``: SEP-Net pattern binarization (Li et al. 2017): per-filter scale + 1-bit signs.

A ``Pattern`` leaf is a k x k kernel ``(kh, kw, in, out)`` stored as its sign
pattern (+1/-1, packed 8 per byte) and one scale per output filter; it
decodes to ``scale * sign``.
"""

from __future__ import annotations

import numpy as np

from zylax.codecs import _common
from zylax.containers import Pattern

METHOD = "pattern"
LITERT_STORAGE = "int2"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: 2-bit integers."""
LITERT_EXACT = True
"""Its values are a sign grid (q in {-1, 0, 1} times a scale per channel): stored exactly."""
Leaf = Pattern


def _checked(leaf: Pattern) -> tuple[np.ndarray, np.ndarray]:
    scale, signs = np.asarray(leaf.scale), np.asarray(leaf.signs)
    _common.float_dtype(scale.dtype.name, "pattern scale")
    if signs.ndim < 1 or scale.shape != signs.shape[-1:]:
        raise ValueError(f"pattern scale shape {scale.shape} does not match the kernel's "
                         f"output channels {signs.shape[-1:]}")
    return scale, signs


def encode(leaf: Pattern) -> dict:
    """One variant: the scales, then the packed signs."""
    scale, signs = _checked(leaf)
    return {"packed": ({"shape": list(signs.shape), "dtype": scale.dtype.name},
                       _common.signs_sections(scale, signs))}


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """``scale * sign`` in the scale's dtype."""
    shape = tuple(entry["shape"])
    if not shape:
        raise ValueError("a pattern kernel needs at least one axis")
    return _common.scaled_signs(sections, shape, _common.float_dtype(entry["dtype"], "pattern"),
                                shape[-1], "pattern")


def dense(leaf: Pattern) -> np.ndarray:
    """``scale * sign``."""
    scale, signs = _checked(leaf)
    return scale * signs.astype(scale.dtype)


def report_row(entry: dict) -> dict:
    """Unpruned, 1 bit per weight plus the per-filter scales; no entropy coding."""
    return _common.signs_row(entry, "pattern")


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: the unpacked bits, their float32 signs and
    one more array of values."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "pattern").itemsize
    return n * (itemsize + 12)
