"""Deep Compression of a model zylax did not define, through the public API."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from zylax import archive, codecs, compress, data, train
from zylax.transforms import tree as ztree


class UserNet(nn.Module):
    """Own names (sorted order differs from execution order), BatchNorm, no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.Conv(8, (3, 3), strides=2, name="zz_entry")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="aa_middle")(x))
        return nn.Dense(10, name="mm_out")(x.reshape((x.shape[0], -1)))


@pytest.fixture(scope="module")
def trained(fmnist_train):
    images, labels = fmnist_train[0][:2048], fmnist_train[1][:2048]
    prep = data.Preprocess.fit(images)
    model = UserNet()
    result = train.fit(model, optax.adam(2e-3), (images, labels), epochs=2, preprocess=prep,
                       progress=False)
    return model, result.variables, (images, labels), prep


def test_a_user_model_goes_through_run_and_the_file_is_bit_identical(trained, fmnist_test,
                                                                     tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:2000] for a in fmnist_test)
    config = compress.Config(sparsity={".*kernel": 0.6}, prune_cycles=1, retrain_epochs=1,
                             finetune_epochs=1, bits=4, index_bits="auto", preprocess=prep)
    rows = []
    result = compress.run(model, variables, train_data, test_data, config,
                          out=str(tmp_path / "user.zyl"), on_epoch=rows.append)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("prune 1/1", 1),
                                                        ("fine-tune centroids", 1)]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    loaded, metadata = archive.load(tmp_path / "user.zyl")
    assert ztree.bit_identical(loaded, result.variables)
    assert set(loaded) == {"params", "batch_stats"}
    assert ztree.bit_identical(loaded, jax.tree.map(codecs.dense, result.stored))
    rep = result.report
    assert rep["file_bytes"] == (tmp_path / "user.zyl").stat().st_size
    assert rep["decoded_exactly"] is True and rep["ratio"] > 4
    from_file = train.evaluate(model, loaded, *test_data, preprocess=prep)["accuracy"]
    assert from_file == rep["compressed_accuracy"] > 0.5
    assert data.Preprocess.from_dict(metadata["preprocess"]) == prep
    kept = {r["name"]: r["kept_percent"] for r in rep["layers"]}
    assert 35 < kept["aa_middle/kernel"] < 45  # 60% pruned, stored shared
    assert not np.array_equal(loaded["batch_stats"]["norm"]["mean"],
                              variables["batch_stats"]["norm"]["mean"])  # retrained statistics


def test_config_refuses_what_would_silently_do_nothing(trained):
    _, variables, _, _ = trained
    with pytest.raises(ValueError, match="sparsity must be a dict"):
        compress.Config(sparsity=0.5)
    with pytest.raises(ValueError, match="prune_cycles must be an integer >= 1"):
        compress.Config(prune_cycles=0)
    with pytest.raises(ValueError, match="unshared_dtype must be None, 'float16' or 'bfloat16', "
                                         "got 'int8'"):
        compress.Config(unshared_dtype="int8")
    with pytest.raises(ValueError, match=r"sparsity patterns \['kernel'\] match no selected leaf"):
        compress.Config(sparsity={"kernel": 0.5}).check_against(variables["params"])


def test_zero_retraining_epochs_prune_without_retraining(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    config = compress.Config(sparsity={".*kernel": 0.5}, prune_cycles=1, retrain_epochs=0,
                             finetune_epochs=0, bits=4, preprocess=prep)
    result = compress.run(model, variables, train_data, tuple(a[:500] for a in fmnist_test),
                          config, out=str(tmp_path / "r0.zyl"))
    assert result.report["decoded_exactly"] is True


def test_unshared_dtype_stores_batchnorm_and_biases_at_two_bytes(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:500] for a in fmnist_test)
    results = {}
    for dtype in (None, "float16"):
        config = compress.Config(sparsity={".*kernel": 0.5}, prune_cycles=1, retrain_epochs=0,
                                 finetune_epochs=0, bits=4, preprocess=prep,
                                 unshared_dtype=dtype)
        results[dtype] = compress.run(model, variables, train_data, test_data, config,
                                      out=str(tmp_path / f"{dtype}.zyl"))
    raw, half = results[None], results["float16"]
    header = archive.read_header(tmp_path / "float16.zyl")
    methods = {f"{e['collection']}/{e['name']}": e["method"] for e in header["leaves"]}
    assert methods["batch_stats/norm/var"] == methods["params/norm/scale"] == "cast"
    assert methods["params/mm_out/bias"] == "cast"
    assert methods["params/aa_middle/kernel"] == "shared"
    unshared = sum(np.size(v) for path, v in ztree.named_leaves(half.variables).items()
                   if "kernel" not in path)
    saved = raw.report["file_bytes"] - half.report["file_bytes"]
    assert 2 * unshared - 40 < saved <= 2 * unshared  # less the header's "stored" fields
    assert half.report["decoded_exactly"] is True
    mean = half.variables["batch_stats"]["norm"]["mean"]
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, mean.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(mean, raw.variables["batch_stats"]["norm"]["mean"], rtol=1e-3)
    assert abs(half.report["compressed_accuracy"] - raw.report["compressed_accuracy"]) <= 0.01


def test_a_value_float16_cannot_hold_is_refused_before_any_retraining(trained, fmnist_test,
                                                                      tmp_path):
    model, variables, train_data, prep = trained
    stats = variables["batch_stats"]["norm"]
    var = np.array(stats["var"])
    var[0] = 1e6
    huge = {**variables, "batch_stats": {"norm": {**stats, "var": var}}}
    config = compress.Config(unshared_dtype="float16", preprocess=prep)
    with pytest.raises(ValueError, match=r"batch_stats/norm/var: value 1000000\.0 overflows"):
        compress.run(model, huge, train_data, fmnist_test, config, out=str(tmp_path / "x.zyl"))
    assert not (tmp_path / "x.zyl").exists()


def test_gradual_pruning_reaches_its_sparsity_on_a_short_run(trained, fmnist_test):
    model, variables, train_data, prep = trained  # 2,048 images: 16 steps an epoch
    config = compress.Config(sparsity={".*kernel": 0.6}, gradual_epochs=1, preprocess=prep)
    ctx = compress.Context(model, train_data, fmnist_test, config, progress=False)
    assert ctx.steps(1) == 16 and compress.gradual_update_every(16) == 1
    pruned, masks = compress.gradual_prune(ctx, variables)
    for layer in ("zz_entry", "aa_middle", "mm_out"):
        mask = np.asarray(masks[layer]["kernel"])
        assert abs(mask.mean() - 0.4) < 0.01, (layer, mask.mean())
        assert np.all(np.asarray(pruned["params"][layer]["kernel"])[~mask] == 0)


def test_fold_batch_norm_stores_the_statistics_as_constants(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:500] for a in fmnist_test)
    results = {}
    for fold in (False, True):
        config = compress.Config(sparsity={".*kernel": 0.5}, prune_cycles=1, retrain_epochs=0,
                                 finetune_epochs=0, bits=4, preprocess=prep,
                                 unshared_dtype="float16", fold_batch_norm=fold)
        results[fold] = compress.run(model, variables, train_data, test_data, config,
                                     out=str(tmp_path / f"{fold}.zyl"))
    header = archive.read_header(tmp_path / "True.zyl")
    methods = {f"{e['collection']}/{e['name']}": e["method"] for e in header["leaves"]}
    assert methods["batch_stats/norm/mean"] == methods["batch_stats/norm/var"] == "constant"
    assert methods["params/norm/scale"] == "cast"
    folded, plain = results[True], results[False]
    assert folded.report["file_bytes"] < plain.report["file_bytes"]
    np.testing.assert_array_equal(folded.variables["batch_stats"]["norm"]["mean"], np.zeros(8))
    assert folded.report["decoded_exactly"] is True
    x = prep(test_data[0][:64])
    np.testing.assert_allclose(model.apply(folded.variables, x), model.apply(plain.variables, x),
                               rtol=0.02, atol=0.02)  # both float16-rounded, differently
    assert abs(folded.report["compressed_accuracy"] - plain.report["compressed_accuracy"]) <= 0.01


def test_config_names_bad_bits_and_patterns_that_match_nothing(trained):
    _, variables, _, _ = trained
    with pytest.raises(ValueError, match=r"bits for '\.\*head' must be an integer in \[1, 16\], "
                                         "got 40"):
        compress.Config(bits={".*head": 40})
    with pytest.raises(ValueError, match=r"bad leaf-path regex '\(\['"):
        compress.Config(sparsity={"([": 0.5})
    with pytest.raises(ValueError, match=r"bits patterns \['.\*nosuch/kernel'\] match no"):
        compress.Config(bits={".*nosuch/kernel": 3, ".*": 4}).check_against(variables["params"])
    compress.Config(bits={".*mm_out/kernel": 3, ".*": 4}).check_against(variables["params"])
