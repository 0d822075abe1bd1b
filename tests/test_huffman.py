import heapq

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zylax.coding import huffman, sparse


def reference_huffman_bits(symbols) -> int:
    """Independent optimal-size computation: sum of merged weights (textbook identity)."""
    counts = [c for c in np.bincount(symbols) if c]
    if len(counts) == 1:
        return counts[0]
    heapq.heapify(counts)
    total = 0
    while len(counts) > 1:
        merged = heapq.heappop(counts) + heapq.heappop(counts)
        total += merged
        heapq.heappush(counts, merged)
    return total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=0, max_size=2000))
def test_round_trip_random(values):
    symbols = np.asarray(values, np.int64)
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols)), symbols)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.floats(0.02, 0.9), st.integers(0, 2 ** 32 - 1))
def test_round_trip_skewed_and_optimal_size(alphabet, p, seed):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(p, 3000) - 1, alphabet)
    blob = huffman.encode(symbols)
    np.testing.assert_array_equal(huffman.decode(blob), symbols)
    assert huffman.payload_bits(symbols) == reference_huffman_bits(symbols)


@pytest.mark.parametrize("symbols", [np.zeros(0, np.int64), np.array([7]), np.full(1000, 3),
                                     np.arange(2 ** 16), np.array([0, 65535, 65535, 1])])
def test_edge_cases(symbols):
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols)), symbols)


def test_payload_is_optimal_plus_table():
    rng = np.random.default_rng(0)
    symbols = rng.geometric(0.15, 100_000) - 1
    blob = huffman.encode(symbols)
    payload_bytes = -(-reference_huffman_bits(symbols) // 8)
    table_bytes = len(blob) - payload_bytes
    assert 0 < table_bytes <= 3 * (symbols.max() + 1) + 16


def test_truncated_or_damaged_blob_raises():
    blob = huffman.encode(np.random.default_rng(1).integers(0, 20, 500))
    with pytest.raises(ValueError):
        huffman.decode(blob[:-3])
    with pytest.raises(ValueError):
        huffman.decode(blob + b"\x00")


def test_rejects_negative_or_float_symbols():
    with pytest.raises(ValueError, match="integers in"):
        huffman.encode(np.array([1, -1]))
    with pytest.raises(ValueError, match="integers in"):
        huffman.encode(np.array([0.5]))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 400), st.floats(0.001, 1.0), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_gap_coding_round_trip_with_fillers(size, density, index_bits, seed):
    rng = np.random.default_rng(seed)
    positions = np.flatnonzero(rng.random(size) < density)
    symbols = rng.integers(0, 16, positions.size)
    gaps, coded = sparse.to_relative(positions, symbols, index_bits, filler=16)
    assert gaps.size == 0 or gaps.max() <= 2 ** index_bits - 1
    got_positions, got_symbols = sparse.from_relative(gaps, coded, size, filler=16)
    np.testing.assert_array_equal(got_positions, positions)
    np.testing.assert_array_equal(got_symbols, symbols)


def test_han_filler_example():
    # Han et al. Figure 2 style: 3-bit gaps (max 7); a gap of 12 needs one filler.
    gaps, symbols = sparse.to_relative(np.array([1, 14]), np.array([5, 6]), 3, filler=9)
    np.testing.assert_array_equal(gaps, [1, 7, 4])
    np.testing.assert_array_equal(symbols, [5, 9, 6])


def test_codes_longer_than_32_bits_round_trip():
    # Fibonacci counts give the deepest Huffman tree: 36 symbols -> a 35-bit code,
    # exercising the long-code packer and the decoder's bit-by-bit fallback.
    fib = [1, 1]
    while len(fib) < 36:
        fib.append(fib[-1] + fib[-2])
    symbols = np.repeat(np.arange(36), fib)
    np.random.default_rng(0).shuffle(symbols)
    assert huffman.code_lengths(np.bincount(symbols)).max() == 35
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols)), symbols)
