import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zylax.coding import ans


def _structured_mask(seed, rows, columns, rate):
    """A mask whose rows and columns keep at different rates (a pruned layer's inputs and
    outputs), some rows empty and some full."""
    rng = np.random.default_rng(seed)
    row_rate = rng.random(rows) ** 2
    column_rate = rng.random(columns)
    mask = rng.random((rows, columns)) < np.clip(rate * 4 * np.outer(row_rate, column_rate), 0, 1)
    mask[rng.random(rows) < 0.1] = False
    if rows > 3:
        mask[rows // 2] = True
    return mask


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), columns=st.integers(1, 40), rate=st.floats(0.0, 1.0),
       alphabet=st.integers(1, 300), model=st.sampled_from(ans.MODELS),
       seed=st.integers(0, 2**32 - 1))
def test_round_trip_exactly(rows, columns, rate, alphabet, model, seed):
    mask = _structured_mask(seed, rows, columns, rate)
    symbols = np.random.default_rng(seed + 1).integers(0, alphabet, int(mask.sum()))
    positions, decoded = ans.decode(ans.encode(mask, symbols, alphabet, model),
                                    (rows, columns), int(mask.sum()), alphabet, model)
    np.testing.assert_array_equal(positions, np.flatnonzero(mask))
    np.testing.assert_array_equal(decoded, symbols)


def test_row_and_column_contexts_cost_less_than_the_entropy_at_the_mean_rate():
    mask = _structured_mask(0, 784, 300, 0.05)
    symbols = np.zeros(int(mask.sum()), np.int64)
    p = mask.mean()
    flat_bits = mask.size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    coded = {model: 8 * sum(map(len, ans.encode(mask, symbols, 1, model)))
             for model in ans.MODELS}
    assert max(coded.values()) < 0.95 * flat_bits, (coded, flat_bits)  # side info counted


def test_an_unstructured_mask_costs_its_entropy_plus_the_side_information():
    rng = np.random.default_rng(1)
    mask = rng.random((400, 500)) < 0.05
    levels, histogram, stream = ans.encode(mask, np.zeros(int(mask.sum()), np.int64), 1,
                                           "rows")
    p = mask.mean()
    entropy_bytes = mask.size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8
    assert 0.97 * entropy_bytes <= len(stream) <= 1.01 * entropy_bytes + 8  # rows fit a little


@pytest.mark.parametrize("model", ans.MODELS)
def test_damaged_streams_are_refused(model):
    mask = _structured_mask(2, 60, 40, 0.2)
    symbols = np.random.default_rng(3).integers(0, 6, int(mask.sum()))
    levels, histogram, stream = ans.encode(mask, symbols, 6, model)
    kept = int(mask.sum())
    good = (levels, histogram, stream)
    for blobs, kept_said in [
            ((levels, histogram, stream[:-4]), kept),           # a word short
            ((levels, histogram, stream + b"\0\0\0\0"), kept),  # a word left over
            ((levels, histogram, stream[:-1]), kept),           # not whole words
            ((levels, histogram + b"\0", stream), kept),        # bytes after the histogram
            ((levels, histogram[:-1], stream), kept),           # a count missing
            (good, kept + 1),                                   # the header's count is off
            ((levels[:-1], histogram, stream), kept)]:          # the levels cut short
        with pytest.raises(ValueError):
            ans.decode(list(blobs), (60, 40), kept_said, 6, model)
    for word in range(len(stream) // 4):
        damaged = bytearray(stream)
        damaged[4 * word] ^= 0x5A
        with pytest.raises(ValueError):
            ans.decode([levels, histogram, bytes(damaged)], (60, 40), kept, 6, model)


def test_levels_that_contradict_each_other_are_refused():
    from zylax.coding import huffman
    # row 0 full, column 0 empty: both cannot hold
    levels = np.array([ans.FULL, ans.NEUTRAL, ans.EMPTY, ans.NEUTRAL])
    with pytest.raises(ValueError, match="a full line crosses an empty one"):
        ans.decode([huffman.encode(levels), b"\x02", b""], (2, 2), 2, 1, "grid")
    with pytest.raises(ValueError, match="codes in"):
        ans.decode([huffman.encode(np.array([ans.TOP + 1, 0])), b"\x00", b""], (2, 2), 0, 1,
                   "rows")


def test_matrix_view_of_a_layer():
    assert ans.as_matrix((5, 5, 20, 50)) == (500, 50)
    assert ans.as_matrix((784, 300)) == (784, 300)
    assert ans.as_matrix((7,)) == (1, 7)
    assert ans.as_matrix(()) == (1, 1)


@settings(max_examples=200, deadline=None)
@given(words=st.binary(max_size=64), model=st.sampled_from(ans.MODELS),
       kept=st.integers(0, 40), cut=st.integers(0, 3))
def test_any_stream_decodes_or_is_one_value_error(words, model, kept, cut):
    mask = _structured_mask(4, 8, 5, 0.5)
    levels, histogram, _ = ans.encode(mask, np.arange(int(mask.sum())) % 3, 3, model)
    try:
        positions, symbols = ans.decode([levels[:len(levels) - cut], histogram, words], (8, 5),
                                        kept, 3, model)
    except ValueError:
        return
    assert positions.size == symbols.size == kept and np.all(symbols < 3)
