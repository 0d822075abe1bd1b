import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import archive, nets, report
from zylax.transforms import pruning, sharing
from zylax.transforms import tree as ztree


def _shared_model(model, shape, sparsity=0.8, bits=None, seed=0):
    params = model.init(jax.random.key(seed), jnp.zeros(shape))["params"]
    masks = pruning.sparsity_masks(params, sparsity)
    latent, aux = sharing.share(pruning.apply_masks(params, masks), bits, masks)
    return latent, aux


@pytest.mark.parametrize("model,shape", [(nets.LeNet300100(), (1, 28, 28, 1)),
                                         (nets.LeNet5(), (1, 28, 28, 1))])
def test_round_trip_is_bit_exact(tmp_path, model, shape):
    latent, aux = _shared_model(model, shape)
    path = tmp_path / "m.zyl"
    size = archive.save(path, latent, aux, metadata={"net": "x"})
    assert size == os.path.getsize(path)
    loaded, header = archive.load(path)
    expected = jax.device_get(sharing.decode(latent, aux))
    assert jax.tree.structure(loaded) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert header["metadata"] == {"net": "x"}
    methods = {e["name"]: e["method"] for e in header["leaves"]}
    assert methods["ip1/kernel"] == "sparse_shared" and methods["ip1/bias"] == "raw"


def test_unpruned_layer_uses_dense_indices(tmp_path):
    params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (64, 64))}}
    latent, aux = sharing.share(params, 3)
    archive.save(tmp_path / "d.zyl", latent, aux)
    loaded, header = archive.load(tmp_path / "d.zyl")
    assert header["leaves"][0]["method"] == "shared"
    np.testing.assert_array_equal(loaded["fc"]["kernel"], sharing.decode(latent, aux)["fc"]["kernel"])


def test_same_inputs_same_bytes(tmp_path):
    blobs = []
    for name in ("a.zyl", "b.zyl"):
        latent, aux = _shared_model(nets.LeNet300100(), (1, 28, 28, 1), seed=3)
        archive.save(tmp_path / name, latent, aux, metadata={"seed": 3})
        blobs.append((tmp_path / name).read_bytes())
    assert blobs[0] == blobs[1]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    params = {"c": {"kernel": jax.random.normal(jax.random.key(1), (3, 3, 2, 4)),
                    "bias": jnp.arange(4.0)},
              "d": {"kernel": jax.random.normal(jax.random.key(2), (24, 10))}}
    masks = pruning.sparsity_masks(params, 0.6)
    latent, aux = sharing.share(pruning.apply_masks(params, masks), 2, masks)
    path = tmp_path_factory.mktemp("small") / "s.zyl"
    archive.save(path, latent, aux)
    return path.read_bytes()


def test_every_single_byte_corruption_is_detected(small_file, tmp_path):
    path = tmp_path / "c.zyl"
    for i in range(len(small_file)):
        damaged = bytearray(small_file)
        damaged[i] ^= 0x5A
        path.write_bytes(bytes(damaged))
        with pytest.raises(archive.CorruptFileError):
            archive.load(path)


def test_every_truncation_is_detected(small_file, tmp_path):
    path = tmp_path / "t.zyl"
    for n in range(len(small_file)):
        path.write_bytes(small_file[:n])
        with pytest.raises(archive.CorruptFileError):
            archive.load(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    latent, aux = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    path = tmp_path / "m.zyl"
    archive.save(path, latent, aux)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        archive.save(path, latent, aux, metadata={"other": 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.zyl"]  # no temp file left behind


def test_written_files_get_the_umask_permissions_not_mkstemps(tmp_path):
    latent, aux = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    old = os.umask(0o027)
    try:
        archive.save(tmp_path / "m.zyl", latent, aux)
        written = report.write({"layers": [], "stages": {}}, str(tmp_path / "r.json"))
    finally:
        os.umask(old)
    for path in [tmp_path / "m.zyl", *written]:
        assert os.stat(path).st_mode & 0o777 == 0o640, path


def test_bad_index_bits_name_the_leaf(tmp_path):
    latent, aux = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    with pytest.raises(ValueError, match="index_bits for 'ip1/kernel' must be an integer in 1..16"):
        archive.save(tmp_path / "x.zyl", latent, aux, index_bits=0)


def test_nan_in_uncoded_leaf_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'b' holds a non-finite value"):
        archive.save(tmp_path / "x.zyl", {"b": jnp.array([1.0, jnp.inf])})


def _pattern_model(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    params = {"conv": {"kernel": jax.random.normal(keys[0], (3, 3, 4, 9))},
              "pw": {"kernel": jax.random.normal(keys[1], (1, 1, 9, 5))},
              "bn": {"scale": jnp.ones(5), "bias": jnp.zeros(5)}}
    stats = {"bn": {"mean": jax.random.normal(keys[2], (5,)), "var": jnp.full(5, 0.5)}}
    return params, stats


def test_pattern_and_batch_stats_round_trip(tmp_path):
    from zylax import report
    from zylax.transforms import pattern

    params, stats = _pattern_model()
    latent, patterns = pattern.binarize_patterns(params)
    size = archive.save(tmp_path / "p.zyl", latent, patterns=patterns, batch_stats=stats)
    variables, header = archive.load_variables(tmp_path / "p.zyl")
    expected = {"params": pattern.apply(latent, patterns), "batch_stats": stats}
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, np.asarray(b))
    params_only, _ = archive.load(tmp_path / "p.zyl")
    assert set(params_only) == {"conv", "pw", "bn"}
    entries = {(e["collection"], e["name"]): e for e in header["leaves"]}
    assert entries["params", "conv/kernel"]["method"] == "pattern"
    assert entries["params", "pw/kernel"]["method"] == "raw"  # 1x1 stays float
    assert entries["batch_stats", "bn/mean"]["method"] == "raw"
    # 324 signs -> 41 bytes, 9 float32 scales
    rows = {r["name"]: r for r in report.layer_rows(header)}
    assert rows["conv/kernel"]["coded_bytes"] == 41 + 36
    assert "batch_stats/bn/var" in rows
    assert report.build(header, file_bytes=size, accuracies={})["stages"]["P+Q"]["bytes"] < \
        sum(r["dense_bytes"] for r in rows.values())


def test_pattern_scale_shape_is_checked(tmp_path):
    from zylax.transforms import pattern

    params, _ = _pattern_model()
    latent, patterns = pattern.binarize_patterns(params)
    with pytest.raises(ValueError, match="other/kernel"):
        archive.save(tmp_path / "bad.zyl", latent, patterns={"other/kernel": patterns["conv/kernel"]})
    latent["conv"]["kernel"] = latent["conv"]["kernel"][:4]
    with pytest.raises(ValueError, match="conv/kernel"):
        archive.save(tmp_path / "bad.zyl", latent, patterns=patterns)


def test_bit_identical_tells_a_decoded_model_from_a_changed_one(tmp_path):
    latent, aux = _shared_model(nets.LeNet5(), (1, 28, 28, 1))
    archive.save(tmp_path / "m.zyl", latent, aux)
    loaded, _ = archive.load(tmp_path / "m.zyl")
    expected = jax.device_get(sharing.decode(latent, aux))
    assert ztree.bit_identical(loaded, expected)
    nudged = jax.tree.map(np.copy, expected)
    nudged["ip1"]["bias"][3] = np.nextafter(nudged["ip1"]["bias"][3], np.float32(1))
    assert not ztree.bit_identical(loaded, nudged)
    assert not ztree.bit_identical(loaded, {**expected, "extra": np.zeros(1)})
    assert not ztree.bit_identical(loaded, jax.tree.map(lambda x: x.astype(np.float64), expected))
