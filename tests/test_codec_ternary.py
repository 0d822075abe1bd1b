import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import float_dtypes, refuses_damaged_sections, round_trip, shapes
from zylax.containers import Ternary


def _leaf(seed, shape, dtype, zeros):
    rng = np.random.default_rng(seed)
    codes = np.where(rng.random(shape) < 0.5, 1, -1)
    codes[rng.random(shape) < zeros] = 0
    return Ternary(codes.astype(np.int8), dtype(0.31), dtype(0.27))


@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_side=20), dtype=float_dtypes(), zeros=st.sampled_from([0.0, 0.3, 0.97]),
       seed=st.integers(0, 2**16))
def test_ternary_round_trips_bit_exactly(shape, dtype, zeros, seed):
    round_trip(_leaf(seed, shape, dtype, zeros), "ternary")


def test_zeros_cost_well_under_a_bit_when_they_dominate():
    leaf = _leaf(0, (800, 500), np.float32, 0.9)
    entry = round_trip(leaf, "ternary")
    assert entry["form"] == "sparse"
    assert 8 * sum(entry["bytes"]) / leaf.codes.size < 0.7
    half = round_trip(_leaf(2, (800, 500), np.float32, 0.5), "ternary")
    assert 8 * sum(half["bytes"]) / 400_000 < 1.6
    dense = round_trip(_leaf(1, (800, 500), np.float32, 0.0), "ternary")
    assert dense["form"] == "packed" or 8 * sum(dense["bytes"]) / 400_000 <= 2.01
    refuses_damaged_sections(leaf)


@settings(max_examples=20, deadline=None)
@given(shape=shapes(max_side=12).filter(lambda s: len(s) >= 1), dtype=float_dtypes(),
       seed=st.integers(0, 2**16))
def test_per_channel_scales_round_trip_bit_exactly(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, shape).astype(np.int8)
    scale = (rng.random(shape[-1:]) + 0.1).astype(dtype)
    entry = round_trip(Ternary(codes, scale, scale * 2), "ternary")
    assert entry["method"] == "raw" or entry["per_channel"] is True


def test_per_channel_scales_must_match_the_output_channels():
    import pytest

    from zylax import archive

    with pytest.raises(ValueError, match="one per output channel"):
        archive.to_bytes({"params": {"w": Ternary(np.zeros((3, 4), np.int8),
                                                  np.ones(3, np.float32),
                                                  np.ones(3, np.float32))}})
    refuses_damaged_sections(Ternary(np.ones((30, 4), np.int8), np.ones(4, np.float32),
                                     np.ones(4, np.float32)))
