import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import finite, float_dtypes, refuses_damaged_sections, round_trip, shapes
from zylax import archive, codecs


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


@settings(max_examples=30, deadline=None)
@given(shape=shapes(max_side=30), dtype=float_dtypes(), pruned=st.sampled_from([0.3, 0.9, 0.99]),
       seed=st.integers(0, 2**16))
def test_a_pruned_float_leaf_round_trips_and_is_stored_sparse_when_that_is_smaller(
        shape, dtype, pruned, seed):
    rng = np.random.default_rng(seed)
    leaf = np.array(finite(rng, shape, dtype))
    leaf[rng.random(shape) < pruned] = 0
    entry = round_trip(leaf, "raw")
    dense_bytes = leaf.size * np.dtype(dtype).itemsize
    assert sum(entry["bytes"]) <= dense_bytes  # never larger than the dense form


def test_the_sparse_form_of_a_mostly_pruned_layer_and_its_report_row():
    rng = np.random.default_rng(0)
    leaf = rng.standard_normal((300, 100)).astype(np.float32)
    leaf[rng.random(leaf.shape) < 0.9] = 0
    entry = round_trip(leaf, "raw")
    kept = int(np.count_nonzero(leaf))
    assert entry["form"] == "sparse" and entry["entries"] >= kept
    assert sum(entry["bytes"]) < 0.2 * leaf.nbytes
    row = codecs.by_method("raw").report_row(entry)
    assert row["kept"] == kept and row["pruned_bytes"] < 0.2 * leaf.nbytes
    refuses_damaged_sections(leaf)


def test_a_dense_leaf_with_some_zeros_counts_its_pruned_bytes_as_han_does():
    leaf = np.arange(1, 1001, dtype=np.float32).reshape(100, 10)
    leaf[:10, 0] = 0  # 1% pruned: the dense bytes are smaller than values + 5-bit gaps
    entry = round_trip(leaf, "raw")
    row = codecs.by_method("raw").report_row(entry)
    assert entry.get("form", "dense") == "dense" and row["pruned_bytes"] == leaf.nbytes
    leaf[:, :8] = 0  # 20% kept: 200 values x (32 + 5) bits < the dense bytes
    row = codecs.by_method("raw").report_row({**round_trip(leaf, "raw"), "form": "dense",
                                              "bytes": [leaf.nbytes]})
    assert row["pruned_bytes"] == -(-200 * 37 // 8)
