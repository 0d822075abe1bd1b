"""Sparse storage with relative indices and filler zeros (Deep Compression section 2).

The kept positions of a flattened layer are stored as gaps: the number of
zeros skipped since the previous entry. A gap must fit in ``index_bits``
bits (at most ``2**index_bits - 1``); a longer run is bridged by filler
entries, each an explicit zero that skips the largest representable gap and
then occupies one position itself (Han's example: a 3-bit index whose gap
exceeds 8 gets a filler zero). Fillers carry ``filler`` as their weight
symbol, so the weight stream and the gap stream stay aligned entry by entry.
"""

from __future__ import annotations

import numpy as np


def check_index_bits(name: str, index_bits) -> int:
    """Validates an index width (integer in 1..16) for leaf ``name``."""
    if isinstance(index_bits, bool) or int(index_bits) != index_bits or not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits for {name!r} must be an integer in 1..16, got {index_bits!r}")
    return int(index_bits)


def to_relative(positions: np.ndarray, symbols: np.ndarray, index_bits: int,
                filler: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes sorted kept positions as ``(gaps, symbols)`` with filler entries.

    Args:
      positions: int, strictly increasing flat indices of the kept weights (a,).
      symbols: the weight symbol (codebook index) of each kept weight (a,).
      index_bits: width of a gap; the largest gap is ``2**index_bits - 1``.
      filler: the weight symbol written for a filler zero.

    Returns:
      ``gaps`` and ``symbols``, both of length ``a + fillers``, int64.
    """
    positions = np.asarray(positions, np.int64)
    symbols = np.asarray(symbols, np.int64)
    span = 1 << index_bits  # positions one filler advances: max gap + its own slot
    gaps = np.diff(positions, prepend=-1) - 1
    if gaps.size and gaps.min() < 0:
        raise ValueError("positions must be strictly increasing")
    fillers, residual = np.divmod(gaps, span)
    per_entry = fillers + 1
    owner = np.repeat(np.arange(positions.size), per_entry)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(per_entry) - per_entry, per_entry)
    is_filler = rank < fillers[owner]
    out_gaps = np.where(is_filler, span - 1, residual[owner])
    out_symbols = np.where(is_filler, filler, symbols[owner])
    return out_gaps.astype(np.int64), out_symbols.astype(np.int64)


def from_relative(gaps: np.ndarray, symbols: np.ndarray, size: int,
                  filler: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``to_relative``: returns ``(positions, symbols)`` of the real entries.

    Raises ``ValueError`` if the entries run past ``size`` positions.
    """
    gaps = np.asarray(gaps, np.int64)
    symbols = np.asarray(symbols, np.int64)
    if gaps.shape != symbols.shape:
        raise ValueError(f"{gaps.size} gaps but {symbols.size} weight symbols")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and (gaps.min() < 0 or positions[-1] >= size):
        raise ValueError(f"sparse entries run past the layer's {size} weights")
    real = symbols != filler
    return positions[real], symbols[real]
