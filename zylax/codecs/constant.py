"""``constant``: an array whose elements are all equal, stored as one value and its shape.

What ``transforms.batchnorm.fold`` leaves behind: a BatchNorm folded for
inference has moving mean 0 and variance ``1 - epsilon`` in every channel.
The header holds the value (a JSON number, exact for every float dtype the
file stores); the leaf has no section.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from zylax.codecs import _common
from zylax.containers import Constant

METHOD = "constant"
LITERT_STORAGE = "float32"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: float32."""
LITERT_EXACT = False
"""Float values are kept as they are, not snapped to a grid."""
Leaf = Constant


def _array(value: float, shape, dtype_name: str) -> np.ndarray:
    dtype = _common.float_dtype(dtype_name, "constant")
    return np.full(tuple(shape), value, dtype)


def _checked_value(value, dtype_name: str) -> float:
    """``value`` as a float; ``ValueError`` unless it is finite and exactly a ``dtype_name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"constant value {str(value)[:40]!r} is not a number")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"constant value {value} is not finite")
    with np.errstate(over="ignore"):
        if float(_array(value, (), dtype_name)) != value:
            raise ValueError(f"constant value {value!r} is not exactly a {dtype_name}")
    return value


def encode(leaf: Constant) -> dict:
    """One variant, no section: shape, dtype and the value in the header."""
    value = _checked_value(leaf.value, leaf.dtype)
    return {"constant": ({"shape": [int(n) for n in leaf.shape], "dtype": leaf.dtype,
                          "value": value}, [])}


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """``np.full(shape, value, dtype)``."""
    if sections:
        raise ValueError(f"{len(sections)} sections, expected none")
    return _array(_checked_value(entry["value"], entry["dtype"]), entry["shape"], entry["dtype"])


def dense(leaf: Constant) -> np.ndarray:
    """The full array."""
    return _array(leaf.value, leaf.shape, leaf.dtype)


def report_row(entry: dict) -> dict:
    """Nothing pruned; every stage costs nothing but the header entry (0 section bytes)."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "constant").itemsize
    return _common.row(n, itemsize, weight_bits=0, quantized_bytes=0, weights_raw_bytes=0,
                       weights_huffman_bytes=0)


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: a bool a value (finite check)."""
    return _common.size_of(entry["shape"])


def uniform_floats(tree: Mapping) -> dict:
    """Every plain float array of ``tree`` with two or more elements, all equal, as a
    ``Constant``; everything else (codec containers, other arrays) as it is."""
    def wrap(path, array, value):
        if array.size < 2 or not np.isfinite(array.flat[0]) or not (array == array.flat[0]).all():
            return value
        return Constant(float(array.flat[0]), array.shape, array.dtype.name)

    return _common.map_plain_floats(tree, wrap, "uniform_floats")
