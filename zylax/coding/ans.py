"""Asymmetric-numeral-system coding of a sparse layer: its kept mask under row and column
occupancy contexts, then its weight symbols under their own frequencies.

A layer is a ``(rows, columns)`` matrix (``as_matrix``: a kernel's inputs by its
outputs). Every row gets a *level code*: empty, full, or its kept rate relative to the
block's, rounded to a power of ``2**(1/STEPS)``; with ``model="grid"`` every column gets
one too (``"rows"``: the columns are all neutral). An entry of an empty line is 0 and of
a full line 1, not coded; every other entry (the *block*) is one Bernoulli symbol of
probability ``p_ij = mean * f_i * g_j`` (``mean``: the block's kept rate; ``f``, ``g``:
the row and column factors). A layer pruned unevenly across its inputs or outputs so
costs less than the ``H(mean)`` bits an entry that gaps reach (Deep Compression's
relative indices). The kept entries' symbols follow, categorical with probabilities
``count / kept`` (nothing when one symbol is all there is). Both are one stream of
``constriction``'s ``AnsCoder`` (Bamler's library; the decoder reads the mask, then the
symbols).

Side information is stored and counted: the level codes (Huffman) and the symbol
histogram (varints). Every probability is computed from integers both sides hold, by the
same float64 operations, so encoder and decoder agree. Decoding refuses levels that
contradict each other, a mask that keeps other than ``kept`` entries, a histogram other
than the stored one and a stream not used exactly.
"""

from __future__ import annotations

import numpy as np

from zylax.coding import huffman

MODELS = ("rows", "grid")
"""Context models: row levels with neutral columns, or row and column levels."""
STEPS = 2
"""Factor levels per octave: a line's factor is rounded to a power of ``2**(1/STEPS)``."""
LOWEST, HIGHEST = -30, 12
"""The factor levels, ``2**(LOWEST/STEPS)`` to ``2**(HIGHEST/STEPS)``."""
EMPTY, FULL = 0, 1
"""Level codes of an empty and a full line; factor level ``l`` has code ``l - LOWEST + 2``."""
NEUTRAL = 2 - LOWEST
"""The code of factor 1."""
TOP = HIGHEST - LOWEST + 2
"""The largest level code."""
P_RANGE = (1e-7, 1.0 - 1e-7)
"""Each coded entry's probability is clipped into this range."""


def as_matrix(shape) -> tuple[int, int]:
    """``(rows, columns)`` of a leaf ``shape``: the product of all axes but the last, and the
    last (a vector is one row; a scalar one entry)."""
    shape = tuple(int(d) for d in shape)
    if not shape:
        return 1, 1
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows, shape[-1]


def _ends(counts: np.ndarray, length: int) -> np.ndarray:
    """``EMPTY``/``FULL`` for lines keeping none/all of ``length`` entries, ``NEUTRAL`` else."""
    return np.where(counts == 0, EMPTY, np.where(counts == length, FULL, NEUTRAL))


def _quantized(ratios: np.ndarray) -> np.ndarray:
    """Level codes of factors ``ratios`` (> 0; 0 gets the lowest level)."""
    steps = np.round(STEPS * np.log2(np.maximum(ratios, 2.0 ** (LOWEST / STEPS))))
    return (np.clip(steps, LOWEST, HIGHEST) - LOWEST + 2).astype(np.int64)


def _factors(codes: np.ndarray) -> np.ndarray:
    """The factor of each level code (``EMPTY`` and ``FULL`` lines never enter a block)."""
    return np.exp2((codes.astype(np.float64) - 2 + LOWEST) / STEPS)


def _block(row_codes: np.ndarray, column_codes: np.ndarray):
    """``(rows, columns, fixed)``: the indices of the partial rows and columns, and the
    ``(rows, columns)`` int8 matrix of fixed entries (1 in a full line, 0 in an empty one,
    -1 in the block). ``ValueError`` when a full line crosses an empty one."""
    row_full, column_full = row_codes == FULL, column_codes == FULL
    row_empty, column_empty = row_codes == EMPTY, column_codes == EMPTY
    if (row_full.any() and column_empty.any()) or (column_full.any() and row_empty.any()):
        raise ValueError("mask levels: a full line crosses an empty one")
    fixed = np.full((row_codes.size, column_codes.size), -1, np.int8)
    fixed[row_empty | row_full] = row_full[row_empty | row_full, None]
    fixed[:, column_empty | column_full] = column_full[column_empty | column_full]
    return np.flatnonzero(row_codes >= 2), np.flatnonzero(column_codes >= 2), fixed


def line_codes(mask: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column level codes of a ``(rows, columns)`` bool ``mask``: the rows' factors
    against the block's mean rate, then (``"grid"``) the columns' against what the rows'
    factors expect (one pass of proportional fitting)."""
    n_rows, n_columns = mask.shape
    row_codes = _ends(mask.sum(axis=1), n_columns)
    column_codes = (_ends(mask.sum(axis=0), n_rows) if model == "grid"
                    else np.full(n_columns, NEUTRAL, np.int64))
    rows, columns = np.flatnonzero(row_codes >= 2), np.flatnonzero(column_codes >= 2)
    block = mask[np.ix_(rows, columns)]
    mean = block.sum() / max(block.size, 1)
    if mean == 0:
        return row_codes, column_codes
    row_codes[rows] = _quantized(block.sum(axis=1) / (mean * columns.size))
    if model == "grid":
        expected = mean * _factors(row_codes[rows]).sum()
        column_codes[columns] = _quantized(block.sum(axis=0) / expected)
    return row_codes, column_codes


def _probabilities(row_codes, column_codes, rows, columns, block_kept: int) -> np.ndarray:
    """float64 probability of each block entry, row-major."""
    mean = block_kept / max(rows.size * columns.size, 1)
    p = mean * np.outer(_factors(row_codes[rows]), _factors(column_codes[columns]))
    return np.clip(p, *P_RANGE).ravel()


def _histogram_bytes(histogram: np.ndarray) -> bytes:
    out = bytearray()
    for count in histogram:
        huffman.put_varint(out, int(count))
    return bytes(out)


def _read_histogram(blob: bytes, alphabet: int, kept: int) -> np.ndarray:
    """The ``alphabet`` varint counts of ``blob``, summing to ``kept``."""
    counts, pos = [], 0
    for _ in range(alphabet):
        value, pos = huffman.get_varint(blob, pos)
        if value > kept:
            raise ValueError(f"symbol histogram: a count of {value} exceeds {kept} kept")
        counts.append(value)
    if pos != len(blob) or sum(counts) != kept:
        raise ValueError("symbol histogram: its counts do not sum to the kept entries, or "
                         "bytes follow them")
    return np.asarray(counts, np.int64)


def encode(mask: np.ndarray, symbols: np.ndarray, alphabet: int, model: str
           ) -> list[bytes]:
    """``[levels, histogram, stream]`` of a ``(rows, columns)`` bool ``mask`` and the symbols
    (ints in ``[0, alphabet)``) of its kept entries in row-major order."""
    import constriction

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    mask = np.asarray(mask, bool)
    symbols = np.asarray(symbols, np.int64)
    row_codes, column_codes = line_codes(mask, model)
    rows, columns, fixed = _block(row_codes, column_codes)
    bits = mask[np.ix_(rows, columns)]
    histogram = np.bincount(symbols, minlength=alphabet)
    coder = constriction.stream.stack.AnsCoder()
    if np.count_nonzero(histogram) > 1:  # else the histogram says every symbol
        categorical = constriction.stream.model.Categorical(histogram / symbols.size,
                                                            perfect=False)
        coder.encode_reverse(symbols.astype(np.int32), categorical)
    if bits.size:
        p = _probabilities(row_codes, column_codes, rows, columns, int(bits.sum()))
        coder.encode_reverse(bits.ravel().astype(np.int32),
                             constriction.stream.model.Bernoulli(perfect=False), p)
    levels = np.concatenate([row_codes, column_codes]) if model == "grid" else row_codes
    return [huffman.encode(levels), _histogram_bytes(histogram),
            coder.get_compressed().astype("<u4").tobytes()]


def decode(blobs: list[bytes], rows_and_columns: tuple[int, int], kept: int, alphabet: int,
           model: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode``: ``(positions, symbols)``, the row-major flat positions of the
    ``kept`` entries and their symbols; ``ValueError`` on any inconsistency."""
    import constriction

    n_rows, n_columns = rows_and_columns
    levels_blob, histogram_blob, stream_blob = blobs
    lines = n_rows + (n_columns if model == "grid" else 0)
    levels = huffman.decode(levels_blob, lines)
    if levels.size != lines or (levels.size and levels.max() > TOP):
        raise ValueError(f"mask levels: expected {lines} codes in [0, {TOP}]")
    row_codes = levels[:n_rows]
    column_codes = levels[n_rows:] if model == "grid" else np.full(n_columns, NEUTRAL)
    rows, columns, fixed = _block(row_codes, column_codes)
    block_kept = kept - int(np.count_nonzero(fixed == 1))
    if not 0 <= block_kept <= rows.size * columns.size:
        raise ValueError(f"mask levels fix more or fewer entries than the {kept} kept")
    histogram = _read_histogram(histogram_blob, alphabet, kept)
    if len(stream_blob) % 4:
        raise ValueError("ANS stream: not a whole number of 32-bit words")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(stream_blob, "<u4")
                                               .astype(np.uint32))
    if rows.size and columns.size:
        p = _probabilities(row_codes, column_codes, rows, columns, block_kept)
        bits = coder.decode(constriction.stream.model.Bernoulli(perfect=False), p)
        fixed[np.ix_(rows, columns)] = bits.reshape(rows.size, columns.size)
    positions = np.flatnonzero(fixed.ravel() == 1)
    if positions.size != kept:
        raise ValueError(f"ANS stream: the mask keeps {positions.size} entries, header says "
                         f"{kept}")
    if np.count_nonzero(histogram) > 1:
        categorical = constriction.stream.model.Categorical(histogram / kept, perfect=False)
        symbols = coder.decode(categorical, kept).astype(np.int64)
    else:
        symbols = np.full(kept, np.argmax(histogram) if kept else 0, np.int64)
    if not coder.is_empty() or not np.array_equal(
            np.bincount(symbols, minlength=alphabet)[:alphabet], histogram) or \
            (symbols.size and symbols.max() >= alphabet):
        raise ValueError("ANS stream: the symbols do not match their histogram, or words are "
                         "left over")
    return positions, symbols
