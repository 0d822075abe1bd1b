"""The one pipeline (``compress.run``) on a model zylax did not define, through the public API."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import archive, codecs, compress, data, methods, tasks, train
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


FAST = compress.Retrain(learning_rate=1e-3)


def test_a_user_model_goes_through_run_and_the_file_is_bit_identical(trained, fmnist_test,
                                                                     tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:2000] for a in fmnist_test)
    rows = []
    chain = [methods.prune(sparsity=0.6), methods.share(bits=4)]
    result = compress.run(model, variables, train_data, test_data, chain, retrain=FAST,
                          out=str(tmp_path / "user.zyl"), preprocess=prep, on_epoch=rows.append)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("prune", 1), ("share", 1)]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    loaded, metadata = archive.load(tmp_path / "user.zyl")
    assert ztree.bit_identical(loaded, result.variables)
    assert set(loaded) == {"params", "batch_stats"}
    assert ztree.bit_identical(loaded, jax.tree.map(codecs.dense, result.stored))
    rep = result.report
    assert rep["file_bytes"] == (tmp_path / "user.zyl").stat().st_size
    assert rep["decoded_exactly"] is True and rep["ratio"] > 4
    assert [r["stage"] for r in rep["stage_scores"]] == ["prune", "share"]
    assert rep["methods"] == ["prune", "share"] and rep["learning_rate"] == 1e-3
    from_file = train.evaluate(model, loaded, *test_data, preprocess=prep)["accuracy"]
    assert from_file == rep["compressed_accuracy"] > 0.5
    assert data.Preprocess.from_dict(metadata["preprocess"]) == prep
    assert metadata["model"] == "test_compress:UserNet"  # a hint for --model, never imported
    kept = {r["name"]: r["kept_percent"] for r in rep["layers"]}
    assert 35 < kept["aa_middle/kernel"] < 45  # 60% pruned, stored shared
    assert not np.array_equal(loaded["batch_stats"]["norm"]["mean"],
                              variables["batch_stats"]["norm"]["mean"])  # retrained statistics


def test_settings_that_would_silently_do_nothing_are_refused(trained):
    _, variables, _, _ = trained
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\)"):
        methods.prune(sparsity=1.5)
    with pytest.raises(ValueError, match="cycles must be an integer >= 1"):
        methods.prune(cycles=0)
    with pytest.raises(ValueError, match="dtype and fallback must be one of"):
        methods.cast(dtype="int8")
    with pytest.raises(ValueError, match=r"sparsity patterns \['kernel'\] match none"):
        methods.prune(sparsity={"kernel": 0.5}).check(variables["params"])
    with pytest.raises(ValueError, match=r"bits patterns \['.\*nosuch/kernel'\] match none"):
        methods.share(bits={".*nosuch/kernel": 3, ".*": 4}).check(variables["params"])
    methods.share(bits={".*mm_out/kernel": 3, ".*": 4}).check(variables["params"])
    with pytest.raises(ValueError, match=r"bits for 'share' must be an integer in 1..16"):
        methods.share(bits={".*head": 40})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.build("prune+nope")


def test_a_stage_left_no_leaf_by_the_earlier_ones_is_refused_before_training(
        trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    epochs = []
    with pytest.raises(ValueError, match="selects no leaf .* earlier methods took 3"):
        compress.run(model, variables, train_data, fmnist_test, methods.build("svd+svd"),
                     out=str(tmp_path / "twice.zyl"), preprocess=prep, on_epoch=epochs.append)
    assert epochs == [] and not (tmp_path / "twice.zyl").exists()
    compress.check_chain(methods.build("prune+share"), variables["params"])


def test_zero_epochs_compress_without_retraining(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    chain = [methods.prune(sparsity=0.5, epochs=0), methods.share(bits=4, epochs=0)]
    result = compress.run(model, variables, train_data, tuple(a[:500] for a in fmnist_test),
                          chain, retrain=FAST, out=str(tmp_path / "r0.zyl"), preprocess=prep)
    assert result.report["decoded_exactly"] is True


def _methods_of(path) -> dict:
    return {f"{e['collection']}/{e['name']}": e["method"] for e in
            archive.read_header(path)["leaves"]}


def test_cast_stores_what_sharing_leaves_float_at_two_bytes(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:500] for a in fmnist_test)
    results = {}
    for dtype in (None, "float16"):
        share = methods.share(bits=4, epochs=0)
        chain = [methods.prune(sparsity=0.5, epochs=0),
                 share if dtype is None else methods.combine(
                     share, methods.cast(dtype=dtype, epochs=0))]
        results[dtype] = compress.run(model, variables, train_data, test_data, chain,
                                      retrain=FAST, preprocess=prep,
                                      out=str(tmp_path / f"{dtype}.zyl"))
    raw, half = results[None], results["float16"]
    stored = _methods_of(tmp_path / "float16.zyl")
    assert stored["batch_stats/norm/var"] == stored["params/norm/scale"] == "cast"
    assert stored["params/mm_out/bias"] == "cast"
    assert stored["params/aa_middle/kernel"] == "shared"
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


def test_a_value_float16_cannot_hold_goes_to_bfloat16_or_is_refused_before_retraining(
        trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    stats = variables["batch_stats"]["norm"]
    var = np.array(stats["var"])
    var[0] = 1e6
    huge = {**variables, "batch_stats": {"norm": {**stats, "var": var}}}
    test_data = tuple(a[:200] for a in fmnist_test)
    chain = [methods.combine(methods.prune(sparsity=0.5, epochs=0),
                             methods.cast(dtype="float16", epochs=0))]
    compress.run(model, huge, train_data, test_data, chain, retrain=FAST, preprocess=prep,
                 out=str(tmp_path / "fallback.zyl"))
    header = archive.read_header(tmp_path / "fallback.zyl")
    var_entry = next(e for e in header["leaves"] if e["name"] == "norm/var")
    assert var_entry["stored"] == "bfloat16"
    strict = [methods.combine(methods.prune(sparsity=0.5),
                              methods.cast(dtype="float16", fallback=None))]
    with pytest.raises(ValueError, match=r"batch_stats/norm/var: value 1000000\.0 overflows"):
        compress.run(model, huge, train_data, test_data, strict, retrain=FAST, preprocess=prep,
                     out=str(tmp_path / "x.zyl"))
    assert not (tmp_path / "x.zyl").exists()


def test_gradual_pruning_reaches_its_sparsity_on_a_short_run(trained, fmnist_test):
    model, variables, train_data, prep = trained  # 2,048 images: 16 steps an epoch
    from zylax.methods.pruning import gradual_update_every

    assert gradual_update_every(16) == 1
    ctx = compress.Context(model, train_data, fmnist_test, tasks.Classification(), prep, FAST,
                           progress=False)
    method = methods.prune(sparsity=0.6, schedule="cubic")
    stage = compress.begin(method, variables, jax.random.key(0))
    stage = compress.retrain_stage(ctx, stage, method, 1e-3, "gradual")
    params = stage.plan.apply(stage.state)
    for layer in ("zz_entry", "aa_middle", "mm_out"):
        kernel = np.asarray(params[layer]["kernel"])
        assert abs(np.mean(kernel != 0) - 0.4) < 0.01, (layer, np.mean(kernel != 0))


def test_fold_batch_norm_stores_the_statistics_as_constants(trained, fmnist_test, tmp_path):
    model, variables, train_data, prep = trained
    test_data = tuple(a[:500] for a in fmnist_test)
    results = {}
    for fold in (False, True):
        chain = [methods.prune(sparsity=0.5, epochs=0),
                 methods.combine(methods.share(bits=4, epochs=0),
                                 methods.cast(dtype="float16", epochs=0))]
        results[fold] = compress.run(model, variables, train_data, test_data, chain,
                                     retrain=FAST, preprocess=prep, fold_batch_norm=fold,
                                     out=str(tmp_path / f"{fold}.zyl"))
    stored = _methods_of(tmp_path / "True.zyl")
    assert stored["batch_stats/norm/mean"] == stored["batch_stats/norm/var"] == "constant"
    assert stored["params/norm/scale"] == "cast"
    folded, plain = results[True], results[False]
    assert folded.report["file_bytes"] < plain.report["file_bytes"]
    np.testing.assert_array_equal(folded.variables["batch_stats"]["norm"]["mean"], np.zeros(8))
    assert folded.report["decoded_exactly"] is True
    x = prep(test_data[0][:64])
    np.testing.assert_allclose(model.apply(folded.variables, x), model.apply(plain.variables, x),
                               rtol=0.02, atol=0.02)  # both float16-rounded, differently
    assert abs(folded.report["compressed_accuracy"] - plain.report["compressed_accuracy"]) <= 0.01


def test_the_learning_rate_is_chosen_on_held_out_training_data_and_recorded(
        trained, fmnist_test, tmp_path, monkeypatch):
    model, variables, train_data, prep = trained
    held, scored = [], []
    loss, score = compress.Context.loss, compress.Context.score

    def spy_loss(self, stage, data):
        held.append(len(data[0]))
        return loss(self, stage, data)

    def spy_score(self, stage, data=None):
        scored.append(len((data or self.test_data)[0]))
        return score(self, stage, data)
    monkeypatch.setattr(compress.Context, "loss", spy_loss)
    monkeypatch.setattr(compress.Context, "score", spy_score)
    result = compress.run(model, variables, train_data, tuple(a[:300] for a in fmnist_test),
                          [methods.prune(sparsity=0.5)], preprocess=prep,
                          out=str(tmp_path / "auto.zyl"))
    rep = result.report
    sweep = {float(k): v for k, v in rep["learning_rate_sweep"].items()}
    assert set(compress.LEARNING_RATES) <= set(sweep)
    assert rep["learning_rate"] == min(sweep, key=lambda r: (sweep[r], r))
    assert compress.next_learning_rate(sweep, compress.LEARNING_RATES) is None  # swept enough
    held_out = max(1, min(2000, int(2048 * compress.HELD_OUT)))
    assert held == [held_out] * len(sweep) and scored == [300]  # the test data for the report


@pytest.mark.parametrize("losses, expected", [
    ({1e-4: 4.0, 3e-4: 3.0, 1e-3: 2.0, 3e-3: 1.0}, 1e-2),  # best at the top: one decade up
    ({1e-4: 4.0, 3e-4: 3.0, 1e-3: 2.0, 3e-3: 1.0, 1e-2: 0.5}, 3e-2),
    ({1e-4: 4.0, 3e-4: 3.0, 1e-3: 2.0, 3e-3: 1.0, 1e-2: 0.5, 3e-2: 0.4}, None),  # two beyond
    ({1e-4: 4.0, 3e-4: 3.0, 1e-3: 2.0, 3e-3: 1.0, 1e-2: 1.5}, None),  # 3e-3 now inside
    ({1e-4: 1.0, 3e-4: 2.0, 1e-3: 3.0, 3e-3: 4.0}, 3e-5),  # best at the bottom: one down
    ({1e-4: 2.0, 3e-4: 1.0, 1e-3: 1.0, 3e-3: 4.0}, None),  # a tie goes to the lower, inside
])
def test_the_rate_sweep_goes_on_past_an_edge_that_wins(losses, expected):
    found = compress.next_learning_rate(losses, compress.LEARNING_RATES)
    assert found == pytest.approx(expected) if expected else found is None


def test_the_retraining_optimizer_is_cosine_decayed_adam_to_the_bit_and_one_program():
    params = {"w": jax.random.normal(jax.random.key(0), (30, 20)), "b": jnp.zeros(20)}
    for rate, steps, decay in ((1e-3, 40, 0.0), (3e-4, 5, 1e-4)):
        reference = optax.adam(optax.cosine_decay_schedule(rate, steps))
        if decay:
            reference = optax.chain(optax.add_decayed_weights(decay), reference)
        ours = compress.Retrain(weight_decay=decay).optimizer(rate, steps)
        a, state_a, b, state_b = params, reference.init(params), params, ours.init(params)
        for t in range(steps + 2):  # past the end of the decay too
            grads = jax.tree.map(lambda x: jnp.sin(x * (t + 1)), a)
            updates_a, state_a = jax.jit(reference.update)(grads, state_a, a)
            updates_b, state_b = jax.jit(ours.update)(grads, state_b, b)
            a, b = optax.apply_updates(a, updates_a), optax.apply_updates(b, updates_b)
        assert ztree.bit_identical(jax.device_get(a), jax.device_get(b))

    def program(rate):
        tx = compress.Retrain().optimizer(rate, 100)
        return jax.jit(tx.update).lower(params, tx.init(params), params).as_text()
    assert program(1e-3) == program(3e-3)  # a sweep's rates share one compiled step
