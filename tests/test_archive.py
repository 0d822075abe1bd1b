import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import archive, methods, nets, report
from zylax.transforms import tree as ztree


def _shared(params, sparsity, bits=None, index_bits=None):
    """``(stored tree with Shared leaves, dense params)`` of ``params`` pruned and shared."""
    key = jax.random.key(0)
    prune = methods.prune(sparsity=sparsity)
    pruned = prune.apply(prune.init(params, key))
    share = methods.share(bits=bits, index_bits=index_bits)
    state = share.init(pruned, key)
    return share.store(state), jax.device_get(share.apply(state))


def _shared_model(model, shape, sparsity=0.8, bits=None, seed=0, index_bits=None):
    """The stored tree (``Shared`` leaves) of a pruned, shared model, and its dense params."""
    params = model.init(jax.random.key(seed), jnp.zeros(shape))["params"]
    return _shared(params, sparsity, bits, index_bits)


@pytest.mark.parametrize("model,shape", [(nets.LeNet300100(), (1, 28, 28, 1)),
                                         (nets.LeNet5(), (1, 28, 28, 1))])
def test_round_trip_is_bit_exact(tmp_path, model, shape):
    stored, expected = _shared_model(model, shape)
    path = tmp_path / "m.zyl"
    size = archive.save(path, stored, metadata={"net": "x"})
    assert size == os.path.getsize(path)
    loaded, metadata = archive.load(path)
    assert ztree.bit_identical(loaded, {"params": expected})
    assert metadata == {"net": "x"}
    entries = {e["name"]: e for e in archive.read_header(path)["leaves"]}
    assert entries["ip1/kernel"]["method"] == "shared"
    assert entries["ip1/kernel"]["form"] == "sparse" and entries["ip1/bias"]["method"] == "raw"


def test_unpruned_layer_uses_dense_indices(tmp_path):
    params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (64, 64))}}
    stored, dense = _shared(params, 0.0, bits=3)
    archive.save(tmp_path / "d.zyl", stored)
    loaded, _ = archive.load(tmp_path / "d.zyl")
    assert archive.read_header(tmp_path / "d.zyl")["leaves"][0]["form"] == "dense"
    np.testing.assert_array_equal(loaded["params"]["fc"]["kernel"], dense["fc"]["kernel"])


def test_same_inputs_same_bytes(tmp_path):
    blobs = []
    for name in ("a.zyl", "b.zyl"):
        stored, _ = _shared_model(nets.LeNet300100(), (1, 28, 28, 1), seed=3, index_bits="auto")
        archive.save(tmp_path / name, stored, metadata={"seed": 3})
        blobs.append((tmp_path / name).read_bytes())
    assert blobs[0] == blobs[1]


def test_variables_keep_every_collection_at_the_top(tmp_path):
    variables = {"params": {"d": {"kernel": np.ones((2, 3), np.float32)}},
                 "batch_stats": {"bn": {"mean": np.zeros(3, np.float32)}},
                 "counters": {"n": np.arange(2, dtype=np.int32)}}
    archive.save(tmp_path / "v.zyl", variables)
    loaded, _ = archive.load(tmp_path / "v.zyl")
    assert ztree.bit_identical(loaded, variables)
    archive.save(tmp_path / "p.zyl", variables["params"])  # params alone
    assert ztree.bit_identical(archive.load(tmp_path / "p.zyl")[0],
                               {"params": variables["params"]})


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    params = {"c": {"kernel": jax.random.normal(jax.random.key(1), (3, 3, 2, 4)),
                    "bias": jnp.arange(4.0)},
              "d": {"kernel": jax.random.normal(jax.random.key(2), (24, 10))}}
    stored, _ = _shared(params, 0.6, bits=2, index_bits=None)
    path = tmp_path_factory.mktemp("small") / "s.zyl"
    archive.save(path, stored)
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
        with pytest.raises(archive.CorruptFileError) as refused:
            archive.load(path)
        assert str(refused.value).startswith(f"{path}: ")  # the error names the file


def test_write_is_atomic(tmp_path, monkeypatch):
    stored, _ = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    path = tmp_path / "m.zyl"
    archive.save(path, stored)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        archive.save(path, stored, metadata={"other": 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.zyl"]  # no temp file left behind


def test_written_files_get_the_umask_permissions_not_mkstemps(tmp_path):
    stored, _ = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    old = os.umask(0o027)
    try:
        archive.save(tmp_path / "m.zyl", stored)
        written = report.write({"layers": [], "stages": {}}, str(tmp_path / "r.json"))
    finally:
        os.umask(old)
    for path in [tmp_path / "m.zyl", *written]:
        assert os.stat(path).st_mode & 0o777 == 0o640, path


def test_bad_index_bits_name_the_leaf(tmp_path):
    stored, _ = _shared_model(nets.LeNet300100(), (1, 28, 28, 1))
    with pytest.raises(ValueError, match="share: index_bits must be an integer"):
        methods.share(index_bits=0)  # refused where it is set
    stored["ip1"]["kernel"] = dataclasses.replace(stored["ip1"]["kernel"], index_bits=0)
    with pytest.raises(ValueError, match="params/ip1/kernel: index_bits .* must be an integer"):
        archive.save(tmp_path / "x.zyl", stored)  # and where a container is saved


def test_nan_in_uncoded_leaf_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="params/b: holds a non-finite value"):
        archive.save(tmp_path / "x.zyl", {"b": jnp.array([1.0, jnp.inf])})
    assert not (tmp_path / "x.zyl").exists()


def _pattern_model(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    params = {"conv": {"kernel": jax.random.normal(keys[0], (3, 3, 4, 9))},
              "pw": {"kernel": jax.random.normal(keys[1], (1, 1, 9, 5))},
              "bn": {"scale": jnp.ones(5), "bias": jnp.zeros(5)}}
    stats = {"bn": {"mean": jax.random.normal(keys[2], (5,)), "var": jnp.full(5, 0.5)}}
    return params, stats


def test_pattern_and_batch_stats_round_trip(tmp_path):
    params, stats = _pattern_model()
    method = methods.pattern()
    state = method.init(params, jax.random.key(0))
    stored = {"params": method.store(state), "batch_stats": stats}
    size = archive.save(tmp_path / "p.zyl", stored)
    variables, _ = archive.load(tmp_path / "p.zyl")
    expected = {"params": method.apply(state), "batch_stats": stats}
    assert ztree.bit_identical(variables, jax.device_get(expected))
    header = archive.read_header(tmp_path / "p.zyl")
    entries = {(e["collection"], e["name"]): e for e in header["leaves"]}
    assert entries["params", "conv/kernel"]["method"] == "pattern"
    assert entries["params", "pw/kernel"]["method"] == "raw"  # 1x1 stays float
    assert entries["batch_stats", "bn/mean"]["method"] == "raw"
    # 324 signs -> 41 bytes, 9 float32 scales
    rows = {r["name"]: r for r in report.layer_rows(header)}
    assert rows["conv/kernel"]["coded_bytes"] == 41 + 36
    assert "batch_stats/bn/var" in rows
    rep = report.build(header, file_bytes=size, accuracies={})
    assert rep["stages"]["P+Q"]["bytes"] < sum(r["dense_bytes"] for r in rows.values())
    cells = [line.split() for line in report.format_table(rep).splitlines()]
    table = {c[0]: c[1] for c in cells if c and "/" in c[0]}
    assert table["conv/kernel"] == "pattern" and table["pw/kernel"] == "raw"
    assert "| conv/kernel | pattern |" in report.to_markdown(rep)


def test_pattern_scale_shape_is_checked(tmp_path):
    from zylax.containers import Pattern

    with pytest.raises(ValueError, match="params/conv/kernel: pattern scale shape"):
        archive.save(tmp_path / "bad.zyl",
                     {"conv": {"kernel": Pattern(np.ones(4, np.float32), np.ones((3, 3, 2, 9)))}})


def test_bit_identical_tells_a_decoded_model_from_a_changed_one(tmp_path):
    stored, expected = _shared_model(nets.LeNet5(), (1, 28, 28, 1))
    archive.save(tmp_path / "m.zyl", stored)
    loaded = archive.load(tmp_path / "m.zyl")[0]["params"]
    assert ztree.bit_identical(loaded, expected)
    nudged = jax.tree.map(np.copy, expected)
    nudged["ip1"]["bias"][3] = np.nextafter(nudged["ip1"]["bias"][3], np.float32(1))
    assert not ztree.bit_identical(loaded, nudged)
    assert not ztree.bit_identical(loaded, {**expected, "extra": np.zeros(1)})
    assert not ztree.bit_identical(loaded, jax.tree.map(lambda x: x.astype(np.float64), expected))


def test_a_new_method_is_one_module(tmp_path, monkeypatch):
    """A codec module dropped into zylax/codecs is found and used without editing anything."""
    import importlib
    import shutil

    import zylax.codecs as package

    folder = os.path.dirname(package.__file__)
    source = tmp_path / "halfprec.py"
    source.write_text("""
import dataclasses
import numpy as np
METHOD = "halfprec"
@dataclasses.dataclass(frozen=True)
class Half:
    values: object
Leaf = Half
def encode(leaf):
    v = np.asarray(leaf.values, np.float16)
    return {"f16": ({"shape": list(v.shape), "dtype": "float16"}, [v.astype("<f2").tobytes()])}
def decode(entry, sections):
    return np.frombuffer(sections[0], "<f2").astype(np.float16).reshape(entry["shape"])
def dense(leaf):
    return np.asarray(leaf.values, np.float16)
def working_bytes(entry):
    return 0
LITERT_STORAGE = "float32"
LITERT_EXACT = False
def report_row(entry):
    n = int(np.prod(entry["shape"]))
    return {"weights": n, "dense_bytes": 2 * n, "kept": n, "weight_bits": 16, "index_bits": 0,
            "entries": n, "pruned_bytes": 2 * n, "quantized_bytes": 2 * n,
            "weights_raw_bytes": 2 * n, "weights_huffman_bytes": 2 * n, "index_raw_bytes": 0,
            "index_huffman_bytes": 0, "codebook_bytes": 0}
""")
    target = os.path.join(folder, "halfprec.py")
    shutil.copy(source, target)
    try:
        fresh = importlib.reload(package)
        monkeypatch.setattr(archive, "codecs", fresh)
        monkeypatch.setattr(report, "codecs", fresh)
        half = importlib.import_module("zylax.codecs.halfprec")
        archive.save(tmp_path / "h.zyl", {"w": half.Half(np.linspace(0, 1, 300))})
        loaded, _ = archive.load(tmp_path / "h.zyl")
        np.testing.assert_array_equal(loaded["params"]["w"], np.linspace(0, 1, 300).astype(
            np.float16))
        header = archive.read_header(tmp_path / "h.zyl")
        assert header["leaves"][0]["method"] == "halfprec"
        assert report.layer_rows(header)[0]["coded_bytes"] == 600
    finally:
        os.remove(target)
        importlib.reload(package)
