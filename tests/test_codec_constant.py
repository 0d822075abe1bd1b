import numpy as np
import pytest
from codec_checks import float_dtypes, round_trip, shapes
from hypothesis import given, settings
from hypothesis import strategies as st

from zylax import archive
from zylax.codecs import constant
from zylax.containers import Cast, Constant


@settings(max_examples=30, deadline=None)
@given(shape=shapes(), dtype=float_dtypes(), value=st.floats(-1e4, 1e4, width=16))
def test_constant_round_trips_bit_exactly_with_no_section(shape, dtype, value):
    name = np.dtype(dtype).name
    entry = round_trip(Constant(float(np.asarray(value, dtype)), shape, name), "constant")
    if entry["method"] == "constant":  # raw when a few values take fewer bytes
        assert entry["bytes"] == [] and entry["dtype"] == name
    else:
        assert np.prod(shape) * np.dtype(dtype).itemsize < 64


def test_a_folded_statistics_vector_stores_as_one_value():
    value = float(np.float32(1 - 1e-5))  # what a folded float32 BatchNorm holds
    blob = archive.to_bytes({"params": {}, "batch_stats": {"bn": {"var": Constant(
        value, (96,), "float32")}}})
    assert len(blob) < 96 * 4
    var = archive.decode_bytes(blob)[0]["batch_stats"]["bn"]["var"]
    np.testing.assert_array_equal(var, np.full(96, 1 - 1e-5, np.float32))


def test_values_a_dtype_cannot_hold_exactly_and_bad_headers_are_refused():
    with pytest.raises(ValueError, match=r"params/w: constant value 0.1 is not exactly a float16"):
        archive.to_bytes({"params": {"w": Constant(0.1, (3,), "float16")}})
    with pytest.raises(ValueError, match=r"params/w: holds a non-finite value \(inf\)"):
        archive.to_bytes({"params": {"w": Constant(float("inf"), (3,), "float32")}})
    for value in ("1.0", None, True):
        with pytest.raises(ValueError, match="is not a number"):
            constant.decode({"shape": [3], "dtype": "float32", "value": value}, [])
    for value, problem in ((float("nan"), "is not finite"), (1e308, "is not exactly a float32")):
        with pytest.raises(ValueError, match=problem):  # what save refuses, load refuses too
            constant.decode({"shape": [3], "dtype": "float32", "value": value}, [])
    with pytest.raises(ValueError, match="expected none"):
        constant.decode({"shape": [3], "dtype": "float32", "value": 1.0}, [b"\0"])


def test_uniform_floats_wraps_all_equal_float_arrays_only():
    cast = Cast(np.ones(3, np.float32), "float16")
    tree = {"batch_stats": {"bn": {"mean": np.zeros(4, np.float32),
                                   "var": np.float32([1.0, 2.0])}},
            "params": {"one": np.float32([5.0]), "ints": np.zeros(3, np.int32), "c": cast}}
    out = constant.uniform_floats(tree)
    assert out["batch_stats"]["bn"]["mean"] == Constant(0.0, (4,), "float32")
    assert out["batch_stats"]["bn"]["var"] is tree["batch_stats"]["bn"]["var"]
    for key in ("one", "ints", "c"):
        assert out["params"][key] is tree["params"][key]
    nan = {"w": np.full(2, np.nan, np.float32)}  # left for the archive to refuse
    assert constant.uniform_floats(nan)["w"] is nan["w"]
    blob = archive.to_bytes(out)
    assert len(blob) < len(archive.to_bytes(tree))
    np.testing.assert_array_equal(archive.decode_bytes(blob)[0]["batch_stats"]["bn"]["mean"],
                                  np.zeros(4, np.float32))
