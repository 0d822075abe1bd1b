import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import finite, float_dtypes, refuses_damaged_sections, round_trip, shapes
from zylax import archive


@settings(max_examples=30, deadline=None)
@given(shape=shapes(), dtype=float_dtypes(), seed=st.integers(0, 2**16))
def test_raw_round_trips_bit_exactly(shape, dtype, seed):
    leaf = finite(np.random.default_rng(seed), shape, dtype)
    assert round_trip(leaf, "raw")["dtype"] == np.dtype(dtype).name


def test_raw_keeps_integer_collections():
    round_trip(np.arange(5, dtype=np.int32), "raw")


def test_raw_refuses_corruption_and_object_arrays():
    refuses_damaged_sections(np.arange(12, dtype=np.float32).reshape(3, 4))
    with pytest.raises(ValueError, match="params/w: raw leaf dtype 'object'"):
        archive.to_bytes({"params": {"w": np.array([object()])}})
