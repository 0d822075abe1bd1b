"""``cast``: a float array stored in a narrower float dtype, decoded to its own dtype.

For the leaves weight sharing leaves alone: BatchNorm scales, biases and
running statistics, and the biases of convolutions. In a MobileNet these are
a few percent of the weights but, stored raw next to Huffman-coded kernels,
half of the file. A ``Cast`` leaf keeps ``values.astype(stored).astype(
values.dtype)``: the file holds ``stored`` (2 bytes a value for float16 or
bfloat16), the model gets back its own dtype. The rounding is the only
loss, and an evaluation of the decoded file measures it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from zylax.codecs import _common
from zylax.containers import Cast

METHOD = "cast"
LITERT_STORAGE = "float32"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: float32 (the narrow values
widened), or float16 where float16 holds the values the graph reads exactly."""
LITERT_EXACT = False
"""Float values are kept as they are, not snapped to a grid."""
Leaf = Cast


def _checked(leaf: Cast) -> tuple[np.ndarray, np.ndarray]:
    """``(values, values rounded to the stored dtype)``; refuses an overflow."""
    values = np.asarray(leaf.values)
    _common.float_dtype(values.dtype.name, "cast values")
    stored = _common.float_dtype(leaf.stored, "cast storage")
    with np.errstate(over="ignore"):
        narrow = values.astype(stored)
    overflow = np.isfinite(values.astype(np.float64)) & ~np.isfinite(narrow.astype(np.float64))
    if overflow.any():
        raise ValueError(f"value {values[overflow].ravel()[0]} overflows {leaf.stored} "
                         "(bfloat16 has float32's range)")
    return values, narrow


def encode(leaf: Cast) -> dict:
    """One variant: the little-endian bytes of the values in the stored dtype."""
    values, narrow = _checked(leaf)
    return {"cast": ({"shape": list(values.shape), "dtype": values.dtype.name,
                      "stored": leaf.stored}, [_common.to_bytes(narrow, narrow.dtype)])}


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """The stored values widened to the entry's dtype."""
    shape = tuple(entry["shape"])
    stored = _common.float_dtype(entry["stored"], "cast storage")
    narrow = _common.from_bytes(sections[0], stored, _common.size_of(shape), "cast section")
    return narrow.astype(_common.float_dtype(entry["dtype"], "cast")).reshape(shape)


def dense(leaf: Cast) -> np.ndarray:
    """``values`` rounded to the stored dtype, in their own dtype."""
    values, narrow = _checked(leaf)
    return narrow.astype(values.dtype)


def report_row(entry: dict) -> dict:
    """Not pruned; P+Q and P+Q+H are the narrow bytes (``weight_bits``: the stored width)."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "cast").itemsize
    stored = _common.float_dtype(entry["stored"], "cast storage").itemsize
    if len(entry["bytes"]) != 1:
        raise ValueError(f"{len(entry['bytes'])} sections, expected 1")
    return _common.row(n, itemsize, weight_bits=8 * stored, quantized_bytes=n * stored,
                       weights_raw_bytes=n * stored, weights_huffman_bytes=n * stored)


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: the narrow values, twice."""
    n = _common.size_of(entry["shape"])
    return n * (2 * _common.float_dtype(entry["stored"], "cast storage").itemsize + 1)


def narrow_floats(tree: Mapping, stored, fallback: str | None = None) -> dict:
    """Every plain float array of ``tree`` wrapped as ``Cast(array, stored)``.

    ``stored``: "float16" or "bfloat16" (or the dtype). Codec containers
    (``Shared``, ``Binary``, ...) and integer arrays stay as they are, as
    does a float array already no wider than ``stored``. Use on the
    variables about to be saved, e.g. ``{"params": ..., "batch_stats": ...}``.
    An array holding a value ``stored`` cannot hold (1e5 in float16) is
    stored as ``fallback`` (e.g. "bfloat16", float32's range) or, without
    one, raises ``ValueError`` naming its path.
    """
    name = stored if isinstance(stored, str) else np.dtype(stored).name
    width = _common.float_dtype(name, "cast storage").itemsize

    def wrap(path, array, value):
        if array.dtype.itemsize <= width:
            return value
        try:
            return narrow(array, name, fallback)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    return _common.map_plain_floats(tree, wrap, "narrow_floats")


def narrow(array: np.ndarray, stored: str, fallback: str | None = None) -> Cast:
    """``Cast(array, stored)``, or ``Cast(array, fallback)`` when ``stored`` cannot hold a
    value of ``array``; ``ValueError`` when neither can."""
    leaf = Cast(array, stored)
    try:
        _checked(leaf)
    except ValueError:
        if fallback is None:
            raise
        leaf = Cast(array, fallback)
        _checked(leaf)
    return leaf
