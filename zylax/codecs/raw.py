"""``raw``: the array's own values (biases, BatchNorm, anything not quantized).

Two forms, the smaller is kept:

* ``dense`` (no ``form`` field in files of earlier versions): the array's
  little-endian bytes;
* ``sparse``, for a float array holding exact zeros (a pruned layer left
  float, e.g. the float first and last layers of a pruned TTQ model): the
  non-zero values in the array's dtype, and their positions as Huffman-coded
  relative gaps (``zylax.coding.sparse``; a filler entry, which bridges a long
  run of zeros, holds the value 0), at the gap width of ``GAP_BITS`` that
  gives the fewest bytes.
"""

from __future__ import annotations

import numpy as np

from zylax.codecs import _common
from zylax.coding import huffman, sparse

METHOD = "raw"
LITERT_STORAGE = "float32"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: float32, as converted."""
LITERT_EXACT = False
"""Float values are kept as they are, not snapped to a grid."""
Leaf = None  # plain arrays
GAP_BITS = range(2, 13)
"""Gap widths tried for the sparse form."""


def _dtype(name: str) -> np.dtype:
    table = {**_common.FLOAT_DTYPES, **_common.INT_DTYPES}
    if name not in table:
        raise ValueError(f"raw leaf dtype {name!r} is not one of {sorted(table)}")
    return table[name]


def _sparse(leaf: np.ndarray, dtype: np.dtype) -> tuple[dict, list[bytes]] | None:
    """The smallest sparse form of a float array with zeros, or None."""
    flat = leaf.ravel()
    if dtype.name not in _common.FLOAT_DTYPES or not flat.size:
        return None
    bits = np.frombuffer(np.ascontiguousarray(flat).tobytes(), np.uint8).reshape(flat.size, -1)
    positions = np.flatnonzero(bits.any(axis=1))  # -0.0 is kept: the file is bit-exact
    if positions.size == flat.size:
        return None
    best = None
    for bits in GAP_BITS:
        gaps, which = sparse.to_relative(positions, np.arange(positions.size), bits, -1)
        values = np.where(which >= 0, flat[positions[np.maximum(which, 0)]], 0).astype(dtype)
        sections = [_common.to_bytes(values, dtype), huffman.encode(gaps)]
        if best is None or sum(map(len, sections)) < sum(map(len, best[1])):
            best = ({"form": "sparse", "index_bits": bits, "entries": int(gaps.size)}, sections)
    return best


def encode(leaf) -> dict:
    """Variants ``raw`` (the bytes) and, for a float array with zeros, ``raw sparse``."""
    leaf = np.asarray(leaf)
    dtype = _dtype(leaf.dtype.name)
    common = {"shape": list(leaf.shape), "dtype": dtype.name,
              "zeros": int(np.count_nonzero(leaf == 0))}
    out = {"raw": (common, [_common.to_bytes(leaf, dtype)])}
    found = _sparse(leaf, dtype)
    if found is not None:
        out["raw sparse"] = ({**common, **found[0]}, found[1])
    return out


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """The array stored by ``encode``."""
    shape = tuple(entry["shape"])
    dtype, n = _dtype(entry["dtype"]), _common.size_of(shape)
    if entry.get("form", "dense") == "dense":
        return _common.from_bytes(sections[0], dtype, n, "raw section").reshape(shape)
    entries = _common.count_field(entry, "entries", 0, n)
    values = _common.from_bytes(sections[0], dtype, entries, "sparse values")
    gaps = huffman.decode(sections[1], n)
    if gaps.size != entries:
        raise ValueError(f"{gaps.size} gaps for {entries} values")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and (gaps.min() < 0 or positions[-1] >= n):
        raise ValueError(f"sparse entries run past the layer's {n} values")
    out = np.zeros(n, dtype)
    out[positions] = values
    if int(np.count_nonzero(out == 0)) != entry["zeros"]:
        raise ValueError("sparse values disagree with the header's count of zeros")
    return out.reshape(shape)


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: a bool a value (finite check); the sparse
    form's values, int64 gaps and positions besides."""
    n, itemsize = _common.size_of(entry["shape"]), _dtype(entry["dtype"]).itemsize
    sparse_form = entry.get("form", "dense") == "sparse"
    return n * ((itemsize + 41) if sparse_form else 1)


def dense(leaf) -> np.ndarray:
    """The leaf itself as a NumPy array."""
    return np.asarray(leaf)


def report_row(entry: dict) -> dict:
    """Stored as is; exact zeros count as pruned, and the sparse form's values and gaps are
    the P, P+Q (values at their own width) and P+Q+H (Huffman-coded gaps) bytes."""
    n = _common.size_of(entry["shape"])
    itemsize = _dtype(entry["dtype"]).itemsize
    kept = n - _common.count_field(entry, "zeros", 0, n)
    form = _common.choice_field({"form": entry.get("form", "dense")}, "form",
                                ("dense", "sparse"))
    if form == "dense":
        if len(entry["bytes"]) != 1:
            raise ValueError(f"{len(entry['bytes'])} sections, expected 1")
        return _common.row(n, itemsize, kept=kept,
                           pruned_bytes=_common.pruned_bytes(entry, kept, itemsize))
    entries = _common.count_field(entry, "entries", kept, n)
    index_bits = _common.count_field(entry, "index_bits", 1, 16)
    values, gaps = entry["bytes"]
    sparse_bytes = _common.nbytes(entries * (8 * itemsize + index_bits))
    return _common.row(n, itemsize, kept=kept, index_bits=index_bits, entries=entries,
                       pruned_bytes=sparse_bytes, quantized_bytes=sparse_bytes,
                       weights_raw_bytes=values, weights_huffman_bytes=values,
                       index_raw_bytes=_common.nbytes(entries * index_bits),
                       index_huffman_bytes=gaps)
