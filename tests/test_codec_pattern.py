import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import finite, float_dtypes, refuses_damaged_sections, round_trip
from zylax.containers import Pattern


def _leaf(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    return Pattern(np.abs(finite(rng, shape[-1:], dtype)),
                   np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8))


@settings(max_examples=30, deadline=None)
@given(kh=st.integers(2, 5), cin=st.integers(1, 20), cout=st.integers(1, 20),
       dtype=float_dtypes(), seed=st.integers(0, 2**16))
def test_pattern_round_trips_bit_exactly(kh, cin, cout, dtype, seed):
    round_trip(_leaf(seed, (kh, kh, cin, cout), dtype), "pattern")


def test_pattern_is_one_bit_a_weight_and_refuses_corruption():
    leaf = _leaf(0, (3, 3, 64, 64), np.float32)
    entry = round_trip(leaf, "pattern")
    assert entry["method"] == "pattern" and entry["bytes"] == [64 * 4, 3 * 3 * 64 * 64 // 8]
    refuses_damaged_sections(leaf)
