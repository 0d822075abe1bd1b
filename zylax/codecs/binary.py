"""``binary``: BNN weights (Courbariaux et al. 2016): 1-bit signs and a scale.

A ``Binary`` leaf is a +1/-1 array with a scale that is a scalar (BNN: 1) or
one value per output channel (last axis, XNOR-Net style); it decodes to
``scale * sign``, 8 weights per byte.
"""

from __future__ import annotations

import numpy as np

from zylax.codecs import _common
from zylax.containers import Binary

METHOD = "binary"
LITERT_STORAGE = "int2"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: 2-bit integers."""
LITERT_EXACT = True
"""Its values are a sign grid (q in {-1, 0, 1} times a scale per channel): stored exactly."""
Leaf = Binary


def _checked(leaf: Binary) -> tuple[np.ndarray, np.ndarray]:
    signs, scale = np.asarray(leaf.signs), np.asarray(leaf.scale)
    _common.float_dtype(scale.dtype.name, "binary scale")
    if scale.shape not in ((), signs.shape[-1:]):
        raise ValueError(f"binary scale shape {scale.shape} is neither a scalar nor the "
                         f"{signs.shape[-1:]} output channels")
    if not np.all(np.abs(signs) == 1):
        raise ValueError("binary signs must all be +1 or -1 (a pruned layer needs the "
                         "ternary codec)")
    return signs, scale


def encode(leaf: Binary) -> dict:
    """One variant: the scale(s), then the packed signs."""
    signs, scale = _checked(leaf)
    return {"packed": ({"shape": list(signs.shape), "dtype": scale.dtype.name,
                        "per_channel": scale.ndim == 1}, _common.signs_sections(scale, signs))}


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """``scale * sign`` in the scale's dtype."""
    shape = tuple(entry["shape"])
    per_channel = _common.choice_field(entry, "per_channel", (True, False))
    if per_channel and not shape:
        raise ValueError("a per-channel scale needs at least one axis")
    return _common.scaled_signs(sections, shape, _common.float_dtype(entry["dtype"], "binary"),
                                shape[-1] if per_channel else 1, "binary")


def dense(leaf: Binary) -> np.ndarray:
    """``scale * sign``."""
    signs, scale = _checked(leaf)
    return scale * signs.astype(scale.dtype)


def report_row(entry: dict) -> dict:
    """1 bit per weight plus the scale(s); no pruning, no entropy coding."""
    _common.choice_field(entry, "per_channel", (True, False))
    return _common.signs_row(entry, "binary")


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: the unpacked bits, their float32 signs and
    one more array of values."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "binary").itemsize
    return n * (itemsize + 12)
