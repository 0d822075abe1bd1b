import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_checks import finite, float_dtypes, refuses_damaged_sections, round_trip, shapes
from zylax import archive, report
from zylax.coding import ans
from zylax.containers import Shared


def _leaf(seed, shape, dtype, bits, pruned, index_bits=None):
    rng = np.random.default_rng(seed)
    k = 2 ** bits
    indices = rng.integers(0, k, shape)
    indices[rng.random(shape) < pruned] = k
    return Shared(np.sort(finite(rng, k, dtype)), indices.astype(np.uint16), index_bits)


@settings(max_examples=40, deadline=None)
@given(shape=shapes(max_dims=3, max_side=30), dtype=float_dtypes(), bits=st.integers(1, 6),
       pruned=st.sampled_from([0.0, 0.5, 0.95]), seed=st.integers(0, 2**16),
       index_bits=st.sampled_from([None, 2, 5, "auto", "ans"]))
def test_shared_round_trips_bit_exactly(shape, dtype, bits, pruned, seed, index_bits):
    round_trip(_leaf(seed, shape, dtype, bits, pruned, index_bits), "shared")


def test_sparse_form_for_a_regularly_pruned_layer_and_corruption_refused():
    leaf = _leaf(0, (300, 100), np.float32, 5, 0.0, "ans")
    leaf.indices.reshape(-1)[np.arange(leaf.indices.size) % 7 != 0] = 32  # gaps all 6
    entry = round_trip(leaf, "shared")
    assert entry["method"] == "shared" and entry["form"] == "sparse"
    refuses_damaged_sections(leaf)


@pytest.mark.parametrize("model", ans.MODELS)
def test_ans_form_for_a_layer_pruned_unevenly_and_corruption_refused(model):
    leaf = _leaf(0, (300, 100), np.float32, 5, 0.0, "ans")
    rng = np.random.default_rng(1)
    rate = 0.3 * np.outer(rng.random(300) ** 2, rng.random(100) if model == "grid" else 1.0)
    leaf.indices[rng.random((300, 100)) >= rate] = 32
    entry = round_trip(leaf, "shared")
    assert entry["form"] == "ans" and entry["model"] == model
    (row,) = report.layer_rows({"leaves": [{**entry, "name": "w", "collection": "params"}]})
    assert row["stored_as"] == "shared/ans" and row["coded_bytes"] == sum(entry["bytes"])
    refuses_damaged_sections(leaf)


@settings(max_examples=25, deadline=None)
@given(layers=st.lists(st.tuples(shapes(max_dims=3, max_side=40), st.integers(1, 6),
                                 st.sampled_from([0.0, 0.3, 0.9, 0.99])), min_size=1,
                       max_size=3),
       seed=st.integers(0, 2**16))
def test_ans_file_is_never_larger_than_huffman_alone(layers, seed):
    with_ans, huffman_only = (
        len(archive.to_bytes({"params": {
            f"w{i}": _leaf(seed + i, shape, np.float32, bits, pruned, index_bits)
            for i, (shape, bits, pruned) in enumerate(layers)}}))
        for index_bits in ("ans", "auto"))
    assert with_ans <= huffman_only


def test_a_codebook_larger_than_the_layer_falls_back_to_raw():
    # 8-bit sharing of a 144-weight conv: a 256-entry codebook outweighs the raw weights
    leaf = _leaf(1, (3, 3, 4, 4), np.float32, 8, 0.0)
    entry = round_trip(leaf, "shared")
    assert entry["method"] == "raw" and sum(entry["bytes"]) == 144 * 4


def test_auto_index_bits_is_never_larger_than_a_fixed_width():
    rng = np.random.default_rng(2)
    tree = {}
    for i, (shape, keep) in enumerate([((800, 300), 0.05), ((300, 100), 0.2), ((50, 20), 0.6)]):
        indices = rng.integers(0, 32, shape)
        indices[rng.random(shape) > keep] = 32
        tree[f"l{i}"] = indices
    sizes = {}
    for bits in ["auto", *range(2, 13)]:
        params = {name: {"kernel": Shared(np.linspace(-1, 1, 32, dtype=np.float32), idx, bits)}
                  for name, idx in tree.items()}
        sizes[bits] = len(archive.to_bytes(params))
    assert sizes["auto"] <= min(v for k, v in sizes.items() if k != "auto"), sizes


def test_indices_outside_the_codebook_are_refused():
    with pytest.raises(ValueError, match="params/w: index 9 lies outside the 8-entry codebook"):
        archive.to_bytes({"params": {"w": Shared(np.zeros(8, np.float32), np.array([0, 9]))}})


def test_a_non_finite_codebook_is_refused():
    with pytest.raises(ValueError, match="params/w: codebook holds NaN or Inf"):
        archive.to_bytes({"params": {"w": Shared(np.array([np.nan, 1], np.float32),
                                                 np.array([1, 2]))}})


def test_a_codebook_of_any_size_round_trips():
    leaf = Shared(np.array([-0.5, 0.0, 0.75], np.float32), np.array([[0, 1], [2, 3]]))
    assert round_trip(leaf, "shared")["method"] in ("shared", "raw")
    np.testing.assert_array_equal(archive.decode_bytes(archive.to_bytes({"w": leaf}))[0][
        "params"]["w"], [[-0.5, 0.0], [0.75, 0.0]])
