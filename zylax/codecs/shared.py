"""``shared``: Deep Compression's weight sharing (Han et al. 2015, sections 3-4).

A ``Shared`` leaf is a codebook of ``k`` values and an index per weight;
index ``k`` marks a pruned weight (decoded as 0). Stored as the codebook (in
the leaf's dtype) plus its indices, in one of three forms:

* ``dense``: every index, Huffman-coded (alphabet ``k + 1``);
* ``sparse``: the kept positions as ``index_bits``-bit gaps with filler
  entries (``zylax.coding.sparse``), gaps and weight indices each
  Huffman-coded;
* ``ans`` (offered with ``index_bits="ans"``): the kept mask under row
  (``model="rows"``) or row and column (``"grid"``) occupancy contexts, then
  the kept weights' indices, in one ANS stream (``zylax.coding.ans``).

``index_bits`` on the leaf fixes the gap width (None: Han's 8 for conv
kernels, 5 otherwise); ``"auto"`` offers every width in ``AUTO_INDEX_BITS``
and the archive keeps the smallest file; ``"ans"`` offers those and the
``ans`` forms (codebooks up to ``ANS_MAX_ALPHABET`` values), and the archive
compares its files with those of ``"auto"`` too (``archive._plans``), so it is
never larger.
"""

from __future__ import annotations

import numpy as np

from zylax.coding import ans, huffman, sparse
from zylax.codecs import _common
from zylax.containers import Shared

METHOD = "shared"
LITERT_STORAGE = "int8"
"""How ``zylax.export`` stores such a kernel with ``weights="auto"``: 8-bit integers per output channel (a codebook is no uniform grid)."""
LITERT_EXACT = False
"""Not exact: the largest change is reported per layer."""
AUTO_INDEX_BITS = range(2, 13)
"""Gap widths offered by ``index_bits="auto"``."""
ANS_MAX_ALPHABET = 1 << 16
"""The largest codebook the ``ans`` form codes (its histogram is one varint a value)."""


Leaf = Shared


def _gap_widths(leaf: Shared, ndim: int) -> list[int]:
    if leaf.index_bits in ("auto", "ans"):
        return list(AUTO_INDEX_BITS)
    if leaf.index_bits is None:
        return [_common.HAN_INDEX_BITS["conv" if ndim == 4 else "dense"]]
    return [sparse.check_index_bits("shared leaf", leaf.index_bits)]


def _checked(leaf: Shared) -> tuple[np.ndarray, np.ndarray]:
    codebook = np.asarray(leaf.codebook)
    indices = np.asarray(leaf.indices)
    if codebook.ndim != 1 or codebook.size == 0:
        raise ValueError(f"codebook must be a non-empty vector, got shape {codebook.shape}")
    _common.float_dtype(codebook.dtype.name, "codebook")
    if not np.isfinite(codebook.astype(np.float64)).all():
        raise ValueError("codebook holds NaN or Inf")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() > codebook.size):
        bad = indices.min() if indices.min() < 0 else indices.max()
        raise ValueError(f"index {int(bad)} lies outside the {codebook.size}-entry codebook "
                         f"(and {codebook.size}, the pruned marker)")
    return codebook, indices.astype(np.int64)


def encode(leaf: Shared) -> dict:
    """Candidates: ``dense`` and ``gaps:<b>`` for each offered gap width ``b``."""
    codebook, indices = _checked(leaf)
    k = codebook.size
    flat = indices.ravel()
    common = {"shape": list(indices.shape), "dtype": codebook.dtype.name, "k": k}
    codebook_bytes = _common.to_bytes(codebook, codebook.dtype)
    kept = flat < k
    out = {"dense": ({**common, "form": "dense", "kept": int(kept.sum())},
                     [codebook_bytes, huffman.encode(flat)])}
    positions = np.flatnonzero(kept)
    for bits in _gap_widths(leaf, indices.ndim):
        gaps, symbols = sparse.to_relative(positions, flat[positions], bits, k)
        out[f"gaps:{bits}"] = ({**common, "form": "sparse", "index_bits": bits,
                               "kept": int(positions.size), "entries": int(symbols.size)},
                              [codebook_bytes, huffman.encode(symbols), huffman.encode(gaps)])
    if leaf.index_bits == "ans" and k <= ANS_MAX_ALPHABET and flat.size:
        mask = kept.reshape(ans.as_matrix(indices.shape))
        for model in ans.MODELS:
            out[f"ans:{model}"] = ({**common, "form": "ans", "model": model,
                                    "kept": int(positions.size)},
                                   [codebook_bytes, *ans.encode(mask, flat[positions], k, model)])
    return out


def decode(entry: dict, sections: list[bytes]) -> np.ndarray:
    """``append(codebook, 0)[indices]`` from the coded streams."""
    shape, k = tuple(entry["shape"]), int(entry["k"])
    size = _common.size_of(shape)
    dtype = _common.float_dtype(entry["dtype"], "codebook")
    codebook = _common.from_bytes(sections[0], dtype, k, "codebook")
    _common.check_finite(codebook, "codebook")
    codebook = np.append(codebook, np.zeros(1, dtype))
    if entry["form"] == "dense":
        indices = huffman.decode(sections[1], size)
        if indices.size != size:
            raise ValueError(f"index stream holds {indices.size} indices for {size} weights")
    else:
        if entry["form"] == "ans":
            kept = _common.count_field(entry, "kept", 0, size)
            if k > ANS_MAX_ALPHABET:
                raise ValueError(f"the ans form codes at most {ANS_MAX_ALPHABET} values, "
                                 f"header says {k}")
            if not size:  # its lines would cost memory that no weight declares
                raise ValueError(f"the ans form codes no empty layer (shape {list(shape)})")
            positions, symbols = ans.decode(sections[1:], ans.as_matrix(shape), kept, k,
                                            _common.choice_field(entry, "model", ans.MODELS))
        else:
            positions, symbols = sparse.from_relative(huffman.decode(sections[2], size),
                                                      huffman.decode(sections[1], size), size, k)
        if positions.size != entry["kept"]:
            raise ValueError(f"sparse streams hold {positions.size} weights, header says "
                             f"{entry['kept']}")
        indices = np.full(size, k, np.int64)
        indices[positions] = symbols
    if indices.size and indices.max() > k:
        raise ValueError(f"index {int(indices.max())} lies outside the {k}-entry codebook")
    return codebook[indices].reshape(shape)


def working_bytes(entry: dict) -> int:
    """Bytes decoding takes beyond the array: int64 indices; the sparse form's int64 gaps,
    symbols and positions besides (measured peak 41 bytes a weight); the ans form's fixed
    entries, float64 probabilities and decoded bits (40; an empty layer has no ans form)."""
    n = _common.size_of(entry["shape"])
    return n * {"sparse": 41, "ans": 40}.get(entry.get("form"), 17)


def dense(leaf: Shared) -> np.ndarray:
    """``append(codebook, 0)[indices]``."""
    codebook, indices = _checked(leaf)
    return np.append(codebook, np.zeros(1, codebook.dtype))[indices]


def report_row(entry: dict) -> dict:
    """Han's columns: P (fp + gap bits per entry), P+Q (bits per entry + codebook), P+Q+H."""
    n = _common.size_of(entry["shape"])
    k = _common.count_field(entry, "k", 1, huffman.MAX_ALPHABET - 1)
    itemsize = _common.float_dtype(entry["dtype"], "codebook").itemsize
    sizes = entry["bytes"]
    form = _common.choice_field(entry, "form", ("dense", "sparse", "ans"))
    kept = _common.count_field(entry, "kept", 0, n)
    entries = _common.count_field(entry, "entries", kept, n) if form == "sparse" else n
    index_bits = _common.count_field(entry, "index_bits", 1, 16) if form == "sparse" else 0
    if len(sizes) != {"dense": 2, "sparse": 3, "ans": 4}[form]:
        raise ValueError(f"{len(sizes)} sections for the {form} form")
    bits = max(1, int(np.ceil(np.log2(k))))  # the codebook's bits (the pruned marker aside)
    if form == "ans":
        _common.choice_field(entry, "model", ans.MODELS)
        return _ans_row(n, itemsize, kept, bits, sizes, entry)
    pruned = (_common.nbytes(entries * (8 * itemsize + index_bits)) if form == "sparse"
              else _common.pruned_bytes(entry, kept, itemsize))
    return _common.row(
        n, itemsize, kept=kept, weight_bits=bits, index_bits=index_bits,
        entries=entries, pruned_bytes=pruned,
        quantized_bytes=_common.nbytes(entries * (bits + index_bits)) + sizes[0],
        weights_raw_bytes=_common.nbytes(entries * bits), weights_huffman_bytes=sizes[1],
        index_raw_bytes=_common.nbytes(entries * index_bits),
        index_huffman_bytes=sizes[2] if form == "sparse" else 0, codebook_bytes=sizes[0])


def _ans_row(n: int, itemsize: int, kept: int, bits: int, sizes: list[int], entry: dict
             ) -> dict:
    """The ``ans`` form's row: P and P+Q as Han counts the kept weights (a relative index
    each at his width); the coded bytes are the mask and the indices in one stream, counted
    as index bytes (with the levels), the histogram as weight bytes."""
    index_bits = _common.HAN_INDEX_BITS["conv" if len(entry["shape"]) == 4 else "dense"]
    return _common.row(
        n, itemsize, kept=kept, weight_bits=bits, index_bits=index_bits, entries=kept,
        pruned_bytes=_common.pruned_bytes(entry, kept, itemsize),
        quantized_bytes=_common.nbytes(kept * (bits + index_bits)) + sizes[0],
        weights_raw_bytes=_common.nbytes(kept * bits), weights_huffman_bytes=sizes[2],
        index_raw_bytes=_common.nbytes(kept * index_bits),
        index_huffman_bytes=sizes[1] + sizes[3], codebook_bytes=sizes[0])
