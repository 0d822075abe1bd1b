"""Helpers shared by the codecs: the dtype table and little-endian array bytes."""

from __future__ import annotations

import math
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from zylax.coding import packing

FLOAT_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
"""Value dtypes a file may hold for weights, codebooks and scales."""

INT_DTYPES = {name: np.dtype(name) for name in
              ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}
"""Further dtypes a raw leaf may hold (integer collections such as counters)."""


def float_dtype(name: str, what: str) -> np.dtype:
    """The float dtype called ``name``; ``ValueError`` naming ``what`` otherwise."""
    if name not in FLOAT_DTYPES:
        raise ValueError(f"{what}: dtype {name!r} is not one of {sorted(FLOAT_DTYPES)}")
    return FLOAT_DTYPES[name]


def check_finite(values: np.ndarray, what: str) -> None:
    """``ValueError`` naming ``what`` when a float array (bfloat16 included) holds NaN or Inf."""
    values = np.asarray(values)
    if values.dtype.kind != "f" and values.dtype.name != "bfloat16":
        return
    finite = np.isfinite(values)  # a bool a value: no wider copy
    if not finite.all():
        bad = float(values[~finite].ravel()[0])
        raise ValueError(f"{what}: holds a non-finite value ({bad})")


def to_bytes(values: np.ndarray, dtype: np.dtype) -> bytes:
    """``values`` cast to ``dtype``, little-endian, C order."""
    return np.ascontiguousarray(values, dtype=dtype.newbyteorder("<")).tobytes()


def from_bytes(blob: bytes, dtype: np.dtype, count: int, what: str) -> np.ndarray:
    """``count`` values of ``dtype`` from ``blob`` (exactly that many bytes), native order."""
    if len(blob) != count * dtype.itemsize:
        raise ValueError(f"{what}: {len(blob)} bytes, expected {count} x {dtype.itemsize}")
    return np.frombuffer(blob, dtype.newbyteorder("<")).astype(dtype)


def size_of(shape) -> int:
    """Number of elements of ``shape`` (exact: Python integers never overflow)."""
    return math.prod(int(d) for d in shape)


def nbytes(bits: int) -> int:
    """Bytes holding ``bits`` bits."""
    return -(-bits // 8)


def row(n: int, itemsize: int, **sizes) -> dict:
    """A report row: defaults for an uncoded leaf of ``n`` values, then ``sizes``."""
    base = {"weights": n, "dense_bytes": n * itemsize, "kept": n, "weight_bits": 8 * itemsize,
            "index_bits": 0, "entries": n, "pruned_bytes": n * itemsize,
            "quantized_bytes": n * itemsize, "weights_raw_bytes": n * itemsize,
            "weights_huffman_bytes": n * itemsize, "index_raw_bytes": 0,
            "index_huffman_bytes": 0, "codebook_bytes": 0}
    base.update(sizes)
    return base


HAN_INDEX_BITS = {"conv": 8, "dense": 5}
"""Deep Compression's relative-index widths (section 2): 8 bits for conv layers, 5 for fc."""


def pruned_bytes(entry: dict, kept: int, itemsize: int) -> int:
    """The P-stage bytes of a leaf stored dense: its ``kept`` values at ``itemsize`` bytes
    plus a relative index each at Han's width (8 bits conv, 5 fc), when that is smaller
    than the dense bytes (as Han counts a pruned layer); the dense bytes otherwise."""
    n = size_of(entry["shape"])
    bits = HAN_INDEX_BITS["conv" if len(entry["shape"]) == 4 else "dense"]
    return min(n * itemsize, nbytes(kept * (8 * itemsize + bits)))


def count_field(entry: dict, key: str, low: int = 0, high: int = 1 << 48) -> int:
    """``entry[key]`` as an int in ``[low, high]``; ``ValueError`` naming the field otherwise."""
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"field {key!r} must be an integer in [{low}, {high}], got "
                         f"{str(value)[:40]!r}")
    return value


def choice_field(entry: dict, key: str, choices: tuple) -> object:
    """``entry[key]``, which must be one of ``choices``."""
    value = entry.get(key)
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"field {key!r} must be one of {choices}, got {str(value)[:40]!r}")
    return value


def signs_sections(scale: np.ndarray, signs: np.ndarray) -> list[bytes]:
    """A sign codec's sections: the scale(s) in their dtype, then the signs packed 8 a byte."""
    return [to_bytes(scale, scale.dtype), packing.pack_binary(signs).tobytes()]


def scaled_signs(sections: list[bytes], shape: tuple, dtype: np.dtype, scales: int,
                 what: str) -> np.ndarray:
    """``scale * sign`` from ``signs_sections``; ``scales`` is 1 (a scalar) or ``shape[-1]``."""
    scale = from_bytes(sections[0], dtype, scales, f"{what} scales")
    check_finite(scale, f"{what} scales")
    n = size_of(shape)
    if len(sections[1]) != nbytes(n):
        raise ValueError(f"{what} bits: {len(sections[1])} bytes for {n} weights")
    signs = packing.unpack_binary(np.frombuffer(sections[1], np.uint8), shape).astype(dtype)
    return (scale.reshape(()) if scales == 1 else scale) * signs


def signs_row(entry: dict, what: str) -> dict:
    """Report row of a sign codec: 1 bit per weight plus the scales; no entropy coding."""
    n = size_of(entry["shape"])
    itemsize = float_dtype(entry["dtype"], f"{what} scale").itemsize
    scales, bits = entry["bytes"]
    return row(n, itemsize, weight_bits=1, quantized_bytes=scales + bits,
               weights_raw_bytes=bits, weights_huffman_bytes=bits, codebook_bytes=scales)


def map_plain_floats(tree, fn, what: str) -> dict:
    """``tree`` with every plain float array replaced by ``fn(path, array)`` (``path``
    "/"-joined); codec containers and other arrays stay as they are. ``what`` names
    the caller in the error for a ``tree`` that is not a dict."""
    if not isinstance(tree, Mapping):
        raise ValueError(f"{what} expects a dict of variables, got {type(tree).__name__}")

    def visit(path, value):
        if isinstance(value, Mapping):
            return {key: visit(f"{path}{key}/", child) for key, child in value.items()}
        if not hasattr(value, "dtype"):  # a codec container
            return value
        array = np.asarray(value)
        if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
            return value
        return fn(path[:-1], array, value)

    return visit("", tree)

