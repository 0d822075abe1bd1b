"""Every method and the combinations, on a model zylax did not define (BatchNorm, Dropout,
unsorted names, a ``training`` flag): through ``compress.run`` and through ``zylax compress
--method ... --model ...``; the file is written, ``evaluate`` scores it as the run did, and
its LiteRT export computes what JAX computes. Also: the defaults keep the model's accuracy."""

import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from zylax import archive, cli, codecs, compress, data, methods, modelfile, train
from zylax.transforms import tree as ztree

USER_MODEL = '''
import flax.linen as nn


class Net(nn.Module):
    """Own names (sorted order is not the execution order), BatchNorm, Dropout, `training`."""
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, training: bool = False):
        x = nn.Conv(8, (3, 3), strides=2, name="zz_stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="mm_body")(x))
        x = nn.relu(nn.Conv(16, (1, 1), name="mm_mix")(x))
        x = nn.Dropout(0.2, deterministic=not training)(x.reshape((x.shape[0], -1)))
        x = nn.relu(nn.Dense(64, name="bb_hidden")(x))
        return nn.Dense(self.num_classes, name="aa_head")(x)
'''

SPECS = ["deep", "ttq", "bnn", "pattern", "prune+ttq", "pattern&share", "prune+binary"]
"""The seed's four methods and the combinations the issue names."""


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_models.py").write_text(USER_MODEL)
    return folder


@pytest.fixture(scope="module")
def user_net(user_module):
    namespace = {}
    exec(USER_MODEL, namespace)  # noqa: S102 - the same source, in this process
    return namespace["Net"]


def test_every_chain_through_the_command_line_to_a_file_evaluate_and_export(
        user_module, monkeypatch, capsys):
    monkeypatch.chdir(user_module)
    common = ["--model", "my_models:Net", "--max-examples", "1024", "--max-test-examples",
              "300", "--learning-rate", "1e-3", "--quiet", "--workdir", "w"]
    for spec in SPECS:
        out = f"{spec.replace('&', '_')}.zyl"
        extra = ["--retrain-epochs", "1"] if spec in ("deep", "prune+ttq", "prune+binary") else []
        cli.main(["compress", *common, "--method", spec, "--baseline-epochs", "1",
                  "--finetune-epochs", "1", *extra, "--out", out])
        printed = capsys.readouterr().out
        score = float(re.search(r"compressed \(the file\) accuracy: ([\d.]+)%", printed)[1])
        _, header = archive.load_with_header(out)
        assert header["metadata"]["model"] == "my_models:Net"
        stored = {e["name"]: e["method"] for e in header["leaves"]
                  if e["collection"] == "params" and e["name"].endswith("kernel")}
        expected = {"deep": {"shared"}, "ttq": {"ternary"}, "bnn": {"binary"},
                    "pattern": {"pattern"}, "prune+ttq": {"ternary"},
                    "pattern&share": {"pattern", "shared"},
                    "prune+binary": {"ternary"}}[spec]  # pruned binary: 3 codes
        # a small leaf is stored raw when that is smaller (the archive keeps the smaller)
        assert expected <= set(stored.values()) <= expected | {"raw"}, (spec, stored)
        if spec in ("ttq", "bnn", "prune+ttq", "prune+binary"):  # first and last float
            assert stored["zz_stem/kernel"] == stored["aa_head/kernel"] == "raw", spec
        cli.main(["evaluate", out, "--model", "my_models:Net", "--max-examples", "300"])
        assert f"test accuracy {score / 100:.4f}" in capsys.readouterr().out, spec
        # sign codes (binary, ternary, pattern) are exact in 2-bit LiteRT tensors; a k-means
        # codebook is no uniform grid (auto snaps it to int8), so shared files go float32
        weights = "float32" if "share" in spec or spec == "deep" else "auto"
        cli.main(["export", out, "--model", "my_models:Net", "--out", out + ".tflite",
                  "--weights", weights])
        exported = capsys.readouterr().out
        diff = float(re.search(r"max \|LiteRT - JAX\| ([\d.e+-]+)", exported)[1])
        assert diff < 1e-4, (spec, exported)


@pytest.mark.parametrize("spec", ["pattern&share", "prune+binary"])
def test_the_library_runs_the_same_chains(spec, user_net, fmnist_train, fmnist_test, tmp_path):
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    prep = data.preprocessing("fashion_mnist")
    model = user_net()
    variables = train.fit(model, optax.adam(1e-3), (images, labels), epochs=1,
                          preprocess=prep, progress=False).variables
    test_data = tuple(a[:300] for a in fmnist_test)
    result = compress.run(model, variables, (images, labels), test_data, methods.build(spec),
                          out=str(tmp_path / "m.zyl"), preprocess=prep,
                          retrain=compress.Retrain(learning_rate=1e-3))
    loaded = modelfile.load_model_file(tmp_path / "m.zyl", model=user_net())
    assert ztree.bit_identical(loaded.variables, jax.tree.map(codecs.dense, result.stored))
    score = loaded.task.evaluate(loaded.model, loaded.variables, *test_data,
                                 preprocess=loaded.preprocess)["accuracy"]
    assert score == result.report["compressed_accuracy"]


class BatchNormCNN(nn.Module):
    """A user's BatchNorm CNN: Keras-style ``training`` flag, Dropout, own names."""

    @nn.compact
    def __call__(self, x, training: bool = False):
        for i, channels in enumerate((16, 32)):
            x = nn.Conv(channels, (3, 3), name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not training, name=f"bn{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = nn.Dropout(0.3, deterministic=not training)(x.reshape((x.shape[0], -1)))
        x = nn.relu(nn.Dense(128, name="fc")(x))
        return nn.Dense(10, name="out")(x)


def test_the_defaults_keep_a_user_models_accuracy(fmnist_train, fmnist_test, tmp_path):
    """6,000 images, the model trained by its user; compress.run with no settings at all:
    one prune cycle, one retraining epoch a stage, the learning rate chosen for it."""
    images, labels = fmnist_train[0][:6000], fmnist_train[1][:6000]
    prep = data.Preprocess.fit(images)
    model = BatchNormCNN()
    recipe = train.Recipe(epochs=3, learning_rate=2e-3, weight_decay=1e-4)
    variables = train.fit_recipe(model, recipe, (images, labels), preprocess=prep,
                                 progress=False).variables
    test_data = tuple(a[:3000] for a in fmnist_test)
    result = compress.run(model, variables, (images, labels), test_data,
                          out=str(tmp_path / "defaults.zyl"), preprocess=prep)
    rep = result.report
    assert [s["stage"] for s in rep["stage_scores"]] == ["prune", "share"]
    assert rep["dense_accuracy"] > 0.8 and rep["ratio"] > 8
    assert rep["compressed_accuracy"] >= rep["dense_accuracy"] - 0.02, rep["stage_scores"]
    assert not np.array_equal(result.variables["batch_stats"]["bn0"]["mean"],
                              variables["batch_stats"]["bn0"]["mean"])  # `training` was found
