"""``ternary``: Trained Ternary Quantization (Zhu et al. 2017): two scales and a code per weight.

A ``Ternary`` leaf holds codes in {-1, 0, +1} and the layer's learned scales
``w_pos``, ``w_neg`` (positive; scalars, or one per output channel: a pruned
binary layer with channel scales); it decodes to ``w_pos`` where the code is
+1, ``-w_neg`` where it is -1 and 0 elsewhere (eq. 6). Three forms, the
smallest is kept:

* ``packed``: 2-bit codes, 4 per byte;
* ``huffman``: the codes Huffman-coded: about 1 bit a zero, the least a
  Huffman code spends on a symbol;
* ``sparse``: only the nonzero codes, as Huffman-coded signs and the
  Huffman-coded gaps between them (``zylax.coding.sparse``, filler
  entries for long runs, gap width ``gaps:<b>`` for b in ``GAP_BITS``):
  in a pruned layer a zero then costs well under a bit.
"""

from __future__ import annotations

import numpy as np

from zylax.coding import huffman, packing, sparse
from zylax.codecs import _common
from zylax.containers import Ternary

METHOD = "ternary"
LITERT_STORAGE = "int2"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: 2-bit integers."""
LITERT_EXACT = True
"""Its values are a sign grid (q in {-1, 0, 1} times a scale per channel): stored exactly."""
GAP_BITS = range(2, 13)
"""Gap widths offered for the sparse form; the archive keeps the smallest file."""


Leaf = Ternary


def _checked(leaf: Ternary) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, scales (2,) or (2, out))``."""
    codes = np.asarray(leaf.codes)
    scales = np.stack([np.asarray(leaf.w_pos), np.asarray(leaf.w_neg)])
    if scales.shape not in ((2,), (2, *codes.shape[-1:])):
        raise ValueError(f"w_pos and w_neg must be scalars or one per output channel "
                         f"{codes.shape[-1:]}, got shape {scales.shape[1:]}")
    _common.float_dtype(scales.dtype.name, "ternary scales")
    if not np.all(np.isin(codes, (-1, 0, 1))):
        raise ValueError("ternary codes must lie in {-1, 0, +1}")
    return codes, scales


def _values(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    zero = np.zeros((), scales.dtype)
    return np.where(codes > 0, scales[0], np.where(codes < 0, -scales[1], zero))


def _scale_count(entry: dict) -> int:
    """How many values each of ``w_pos``, ``w_neg`` holds: 1, or the output channels."""
    per_channel = _common.choice_field({"per_channel": entry.get("per_channel", False)},
                                       "per_channel", (True, False))
    if per_channel and not entry["shape"]:
        raise ValueError("a per-channel scale needs at least one axis")
    return int(entry["shape"][-1]) if per_channel else 1


def encode(leaf: Ternary) -> dict:
    """Candidates ``packed`` (2 bits a weight) and ``huffman`` (codes + 1 as symbols)."""
    codes, scales = _checked(leaf)
    common = {"shape": list(codes.shape), "dtype": scales.dtype.name,
              "zeros": int(np.sum(codes == 0))}
    if scales.ndim == 2:
        common["per_channel"] = True
    scale_bytes = _common.to_bytes(scales, scales.dtype)
    flat = codes.ravel().astype(np.int64)
    out = {"packed": ({**common, "form": "packed"}, [scale_bytes, packing.pack_ternary(codes)
                                                     .tobytes()]),
           "huffman": ({**common, "form": "huffman"}, [scale_bytes, huffman.encode(flat + 1)])}
    positions = np.flatnonzero(flat)
    for bits in GAP_BITS:  # signs: 0 for -1, 1 for +1, 2 for a filler
        gaps, signs = sparse.to_relative(positions, (flat[positions] > 0).astype(np.int64),
                                         bits, 2)
        out[f"gaps:{bits}"] = ({**common, "form": "sparse", "index_bits": bits,
                                "entries": int(signs.size)},
                               [scale_bytes, huffman.encode(signs), huffman.encode(gaps)])
    return out


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """``w_pos`` / 0 / ``-w_neg`` per code."""
    shape = tuple(entry["shape"])
    n = _common.size_of(shape)
    count = _scale_count(entry)
    scales = _common.from_bytes(sections[0], _common.float_dtype(entry["dtype"], "ternary "
                                                                 "scales"), 2 * count,
                                "ternary scales").reshape((2,) if count == 1 else (2, count))
    _common.check_finite(scales, "ternary scales")
    if entry["form"] == "packed":
        if len(sections[1]) != _common.nbytes(2 * n):
            raise ValueError(f"ternary codes: {len(sections[1])} bytes for {n} weights")
        codes = packing.unpack_ternary(np.frombuffer(sections[1], np.uint8), shape)
    elif entry["form"] == "sparse":
        positions, signs = sparse.from_relative(huffman.decode(sections[2], n),
                                                huffman.decode(sections[1], n), n, 2)
        if positions.size != n - entry["zeros"] or (signs.size and signs.max() > 1):
            raise ValueError("sparse ternary streams do not fit the layer")
        codes = np.zeros(n, np.int64)
        codes[positions] = 2 * signs - 1
        codes = codes.reshape(shape)
    else:
        symbols = huffman.decode(sections[1], n)
        if symbols.size != n or (n and symbols.max() > 2):
            raise ValueError(f"ternary code stream does not fit {n} weights")
        codes = symbols.reshape(shape) - 1
    return _values(codes, scales)


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: int64 codes, streams and positions, and one
    more array of values (measured peak 40 bytes a weight besides the output)."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "ternary scales").itemsize
    return n * (itemsize + 40)


def dense(leaf: Ternary) -> np.ndarray:
    """``w_pos`` / 0 / ``-w_neg`` per code."""
    codes, scales = _checked(leaf)
    return _values(codes, scales)


def report_row(entry: dict) -> dict:
    """Nonzero codes count as kept; 2 bits per weight before entropy coding."""
    n = _common.size_of(entry["shape"])
    itemsize = _common.float_dtype(entry["dtype"], "ternary scales").itemsize
    _scale_count(entry)
    form = _common.choice_field(entry, "form", ("packed", "huffman", "sparse"))
    zeros = _common.count_field(entry, "zeros", 0, n)
    if form != "sparse":
        scales, codes = entry["bytes"]
        return _common.row(n, itemsize, kept=n - zeros, weight_bits=2,
                           pruned_bytes=_common.pruned_bytes(entry, n - zeros, itemsize),
                           quantized_bytes=_common.nbytes(2 * n) + scales,
                           weights_raw_bytes=_common.nbytes(2 * n), weights_huffman_bytes=codes,
                           codebook_bytes=scales)
    scales, signs, gaps = entry["bytes"]
    entries = _common.count_field(entry, "entries", n - zeros, n)
    index_bits = _common.count_field(entry, "index_bits", 1, 16)
    return _common.row(n, itemsize, kept=n - zeros, weight_bits=1, index_bits=index_bits,
                       entries=entries,
                       pruned_bytes=_common.nbytes(entries * (8 * itemsize + index_bits)),
                       quantized_bytes=_common.nbytes(entries * (1 + index_bits)) + scales,
                       weights_raw_bytes=_common.nbytes(entries), weights_huffman_bytes=signs,
                       index_raw_bytes=_common.nbytes(entries * index_bits),
                       index_huffman_bytes=gaps, codebook_bytes=scales)
