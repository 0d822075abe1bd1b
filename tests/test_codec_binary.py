import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import float_dtypes, refuses_damaged_sections, round_trip, shapes
from zylax import archive
from zylax.containers import Binary


@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_side=20), dtype=float_dtypes(), per_channel=st.booleans(),
       seed=st.integers(0, 2**16))
def test_binary_round_trips_bit_exactly(shape, dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    scale = (rng.random(shape[-1:]) + 0.1 if per_channel else np.float64(0.7)).astype(dtype)
    round_trip(Binary(np.where(rng.random(shape) < 0.5, 1, -1), scale), "binary")


def test_binary_is_one_bit_a_weight_and_refuses_corruption():
    leaf = Binary(np.where(np.random.default_rng(0).random((784, 1024)) < 0.5, 1, -1),
                  np.float32(1))
    entry = round_trip(leaf, "binary")
    assert entry["method"] == "binary" and entry["bytes"] == [4, 784 * 1024 // 8]
    refuses_damaged_sections(leaf)


def test_zeros_are_refused_naming_the_leaf():
    with pytest.raises(ValueError, match="params/w: binary signs must all be"):
        archive.to_bytes({"params": {"w": Binary(np.array([1, 0, -1]), np.float32(1))}})
