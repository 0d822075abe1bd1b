"""``raw``: the array's own bytes (biases, BatchNorm, anything not compressed)."""

from __future__ import annotations

import numpy as np

from zylax.codecs import _common

METHOD = "raw"
Leaf = None  # plain arrays


def _dtype(name: str) -> np.dtype:
    table = {**_common.FLOAT_DTYPES, **_common.INT_DTYPES}
    if name not in table:
        raise ValueError(f"raw leaf dtype {name!r} is not one of {sorted(table)}")
    return table[name]


def encode(leaf) -> dict:
    """One variant: the little-endian bytes of ``leaf``."""
    leaf = np.asarray(leaf)
    dtype = _dtype(leaf.dtype.name)
    return {"raw": ({"shape": list(leaf.shape), "dtype": dtype.name,
                     "zeros": int(np.count_nonzero(leaf == 0))},
                    [_common.to_bytes(leaf, dtype)])}


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """The array stored by ``encode``."""
    shape = tuple(entry["shape"])
    return _common.from_bytes(sections[0], _dtype(entry["dtype"]), _common.size_of(shape),
                              "raw section").reshape(shape)


def dense(leaf) -> np.ndarray:
    """The leaf itself as a NumPy array."""
    return np.asarray(leaf)


def report_row(entry: dict) -> dict:
    """Stored as is: every stage costs the raw bytes; exact zeros count as pruned."""
    n = _common.size_of(entry["shape"])
    return _common.row(n, _dtype(entry["dtype"]).itemsize,
                       kept=n - _common.count_field(entry, "zeros", 0, n))
