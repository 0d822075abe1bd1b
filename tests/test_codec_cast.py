import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import finite, refuses_damaged_sections, round_trip, shapes
from zylax import archive
from zylax.codecs.cast import narrow_floats
from zylax.containers import Cast, Shared


@settings(max_examples=30, deadline=None)
@given(shape=shapes(), dtype=st.sampled_from([np.float32, np.float64]),
       stored=st.sampled_from(["float16", "bfloat16"]), seed=st.integers(0, 2**16))
def test_cast_round_trips_bit_exactly_in_the_original_dtype(shape, dtype, stored, seed):
    values = finite(np.random.default_rng(seed), shape, dtype)
    entry = round_trip(Cast(values, stored), "cast")
    if entry["method"] == "cast":
        assert entry["dtype"] == np.dtype(dtype).name and entry["stored"] == stored
        assert entry["bytes"] == [2 * values.size]


def test_cast_is_the_rounding_to_the_stored_dtype_and_nothing_else():
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    def saved(mean):
        return archive.to_bytes({"params": {}, "batch_stats": {"bn": {"mean": mean}}})

    blob = saved(Cast(values, "float16"))
    got = archive.decode_bytes(blob)[0]["batch_stats"]["bn"]["mean"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.astype(np.float16).astype(np.float32))
    assert np.max(np.abs(got - values) / np.abs(values)) <= 2.0 ** -11  # float16 rounding
    assert len(blob) < len(saved(values)) - 1900


def test_overflow_is_refused_naming_the_leaf_and_corruption_is_refused():
    with pytest.raises(ValueError, match=r"batch_stats/bn/var: value 100000\.0 overflows float16"):
        archive.to_bytes({"params": {}, "batch_stats": {"bn": {"var": Cast(np.float32([1.0, 1e5]),
                                                                             "float16")}}})
    archive.to_bytes({"params": {"w": Cast(np.float32([1e5]), "bfloat16")}})
    with pytest.raises(ValueError, match="params/w: cast storage: dtype 'int8' is not one of"):
        archive.to_bytes({"params": {"w": Cast(np.float32([1.0]), "int8")}})
    refuses_damaged_sections(Cast(np.arange(12, dtype=np.float32).reshape(3, 4), "float16"))


def test_narrow_floats_wraps_plain_float_arrays_only():
    shared = Shared(np.float32([0.5, -0.5]), np.array([0, 1, 2]))
    tree = {"params": {"conv": {"kernel": shared, "bias": np.zeros(3, np.float32)},
                       "half": np.zeros(2, np.float16)},
            "batch_stats": {"bn": {"mean": np.ones(3, np.float32)}},
            "counters": {"step": np.int32(7)}}
    out = narrow_floats(tree, "float16")
    assert out["params"]["conv"]["kernel"] is shared
    assert out["params"]["conv"]["bias"] == Cast(tree["params"]["conv"]["bias"], "float16")
    assert isinstance(out["batch_stats"]["bn"]["mean"], Cast)
    assert out["params"]["half"] is tree["params"]["half"]  # no wider than float16 already
    assert out["counters"]["step"] is tree["counters"]["step"]
    assert isinstance(narrow_floats({"w": np.ones(2, ml_dtypes.bfloat16)}, "float16")["w"],
                      np.ndarray)
    assert narrow_floats({"w": np.ones(2)}, np.float16)["w"].stored == "float16"


def test_narrow_floats_names_the_leaf_a_value_overflows_in():
    tree = {"params": {"head": {"bias": np.float32([0.0, 1e5])}}}
    with pytest.raises(ValueError, match=r"^params/head/bias: value 100000\.0 overflows float16"):
        narrow_floats(tree, "float16")
    assert narrow_floats(tree, "bfloat16")["params"]["head"]["bias"].stored == "bfloat16"
    with pytest.raises(ValueError, match="expects a dict of variables, got list"):
        narrow_floats([np.ones(2)], "float16")
