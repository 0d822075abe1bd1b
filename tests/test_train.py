import os
import subprocess
import sys
import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import data, nets, train

FMNIST = data.preprocessing("fashion_mnist")


def test_one_epoch_lenet300_on_real_data(fmnist_train, fmnist_test):
    model = nets.LeNet300100()
    logged = []
    result = train.fit(model, optax.adam(1e-3), fmnist_train, preprocess=FMNIST, epochs=1,
                       eval_data=fmnist_test, progress=False, on_epoch=logged.append)
    assert result.history[0]["test_accuracy"] > 0.80
    assert logged == result.history
    assert int(result.state.step) == 60000 // 128


class _HalveIp3:
    """A minimal method-like object: ``apply`` halves ip3's weights, ``penalty`` adds a term."""

    def __init__(self, penalty: float = 0.0):
        self.seen, self.weight = [], penalty

    def apply(self, state, rng=None):
        params = state["latent"]
        self.seen.append(jax.tree.structure(params))
        scale = state["aux"]["scale"]
        return {**params, "ip3": jax.tree.map(lambda v: v * scale, params["ip3"])}

    def penalty(self, state):
        return self.weight * jnp.sum(state["latent"]["ip3"]["kernel"])


def test_a_method_sits_inside_the_differentiated_function(fmnist_train):
    method = _HalveIp3()
    model = nets.LeNet300100()
    images, labels = fmnist_train[0][:256], fmnist_train[1][:256]
    result = train.fit(model, optax.sgd(0.1), (images, labels), preprocess=FMNIST,
                       epochs=1, method=method, aux={"scale": jnp.float32(0.5)}, progress=False)
    init = train.init_variables(model, FMNIST(images[:1]), 0)["params"]
    assert method.seen and method.seen[0] == jax.tree.structure(init)
    # ip3's gradient is halved, so its bias moves by half of what the plain model's would.
    plain = train.fit(model, optax.sgd(0.1), (images, labels), preprocess=FMNIST,
                      epochs=1, progress=False)
    moved_method = result.state.params["ip3"]["bias"] - init["ip3"]["bias"]
    moved_plain = plain.state.params["ip3"]["bias"] - init["ip3"]["bias"]
    assert float(jnp.abs(moved_method).sum()) > 0
    assert not np.allclose(moved_method, moved_plain)


def test_the_aux_constants_and_the_penalty_reach_the_loss(fmnist_train):
    model = nets.LeNet300100()
    images, labels = fmnist_train[0][:256], fmnist_train[1][:256]
    result = train.fit(model, optax.sgd(0.1), (images, labels), preprocess=FMNIST, epochs=1,
                       method=_HalveIp3(), aux={"scale": jnp.float32(0.0)}, progress=False)
    # ip3 zeroed: its kernel gets no gradient and does not move
    init = train.init_variables(model, FMNIST(images[:1]), 0)["params"]
    chex.assert_trees_all_equal(result.state.params["ip3"]["kernel"], init["ip3"]["kernel"])
    penalised = train.fit(model, optax.sgd(0.1), (images, labels), preprocess=FMNIST, epochs=1,
                          method=_HalveIp3(penalty=1e3), aux={"scale": jnp.float32(0.0)},
                          progress=False)
    moved = init["ip3"]["kernel"] - penalised.state.params["ip3"]["kernel"]
    np.testing.assert_allclose(moved, 0.1 * 1e3 * (256 // 128), rtol=1e-4)  # lr x weight x steps


def test_killed_run_resumes_bit_identically(fmnist_train, tmp_path):
    model = nets.LeNet300100()
    images, labels = fmnist_train[0][:2048], fmnist_train[1][:2048]
    kwargs = dict(preprocess=FMNIST, epochs=3, batch_size=128, seed=7, progress=False)
    tx = optax.adamw(optax.cosine_decay_schedule(1e-3, 48), weight_decay=1e-4)
    uninterrupted = train.fit(model, tx, (images, labels), **kwargs)
    # "Killed" after 21 steps (mid-epoch 2), last checkpoint at step 20.
    ckpt = tmp_path / "ckpt"
    train.fit(model, tx, (images, labels), checkpoint_dir=ckpt, checkpoint_every=10,
              max_steps=21, **kwargs)
    import shutil
    shutil.rmtree(ckpt / "21")
    resumed = train.fit(model, tx, (images, labels), checkpoint_dir=ckpt, checkpoint_every=10,
                        **kwargs)
    assert int(resumed.state.step) == int(uninterrupted.state.step) == 48
    chex.assert_trees_all_equal(resumed.state.params, uninterrupted.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, uninterrupted.state.opt_state)


def test_run_that_fails_before_its_first_save_leaves_no_checkpoint_folder(fmnist_train,
                                                                         tmp_path):
    def failing_loss(outputs, targets, mask):
        raise RuntimeError("the user's loss is broken")

    images, labels = fmnist_train[0][:256], fmnist_train[1][:256]
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="loss is broken"):
        train.fit(nets.LeNet300100(), optax.sgd(0.1), (images, labels), epochs=1,
                  batch_size=128, preprocess=FMNIST, checkpoint_dir=ckpt, progress=False,
                  loss=failing_loss)
    assert not ckpt.exists()
    train.fit(nets.LeNet300100(), optax.sgd(0.1), (images, labels), epochs=1, batch_size=128,
              preprocess=FMNIST, checkpoint_dir=ckpt, progress=False)
    assert train.latest_checkpoint_step(str(ckpt)) == 2


def _conv_bn_trunk(module: nn.Module, x):
    """conv -> BatchNorm (batch statistics while batch_stats is mutable) -> ReLU -> flatten."""
    x = nn.Conv(8, (3, 3), strides=(2, 2), name="conv")(x)
    x = nn.BatchNorm(use_running_average=not module.is_mutable_collection("batch_stats"),
                     name="bn")(x)
    return nn.relu(x).reshape((x.shape[0], -1))


class _BNWithoutTrainArg(nn.Module):
    """A user model with BatchNorm whose ``__call__`` has no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10, name="head")(_conv_bn_trunk(self, x))


def test_batchnorm_model_without_train_argument_trains_and_evaluates(fmnist_train, fmnist_test):
    model = _BNWithoutTrainArg()
    assert train.mode_kwargs(model, True) == {}
    images, labels = fmnist_train[0][:2048], fmnist_train[1][:2048]
    initial = train.init_variables(model, FMNIST(images[:1]), 0)
    assert set(initial) == {"params", "batch_stats"}
    result = train.fit(model, optax.adam(3e-3), (images, labels), preprocess=FMNIST, epochs=1,
                       batch_size=128, progress=False)
    assert int(result.state.step) == 2048 // 128
    trained = result.variables
    assert set(trained) == {"params", "batch_stats"}
    # the running statistics were updated in training (mutable batch_stats -> batch statistics)
    for key in ("mean", "var"):
        assert not np.allclose(trained["batch_stats"]["bn"][key],
                               initial["batch_stats"]["bn"][key]), key
    test_images, test_labels = fmnist_test[0][:1000], fmnist_test[1][:1000]
    metrics = train.evaluate(model, trained, test_images, test_labels, preprocess=FMNIST)
    assert metrics["accuracy"] > 0.6
    # evaluation runs on the running averages: equal to a plain apply with immutable batch_stats
    logits = model.apply(trained, FMNIST(test_images))
    brute = int(np.sum(np.argmax(np.asarray(logits), -1) == test_labels))
    assert abs(metrics["accuracy"] - brute / 1000) <= 1 / 1000


def test_evaluate_divides_by_the_real_examples_only(fmnist_test):
    model = nets.LeNet300100()
    images, labels = fmnist_test[0][:1001], fmnist_test[1][:1001]
    variables = train.init_variables(model, FMNIST(images[:1]), 3)
    # biases start at zero, so a padded (all-zero) example gets all-zero logits and is
    # predicted as class 0, its padding label: counted if the mask were ignored
    zero_logits = model.apply(variables, np.zeros((1, 28, 28, 1), np.float32))
    assert int(np.argmax(zero_logits)) == 0
    metrics = train.evaluate(model, variables, images, labels, preprocess=FMNIST,
                             batch_size=1000)
    logits = np.asarray(model.apply(variables, FMNIST(images)), np.float64)
    brute = int(np.sum(np.argmax(logits, -1) == labels))
    assert metrics["accuracy"] == pytest.approx(brute / 1001, abs=1e-12)
    log_probs = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                       keepdims=True)) - logits.max(-1, keepdims=True)
    mean_loss = -np.mean(log_probs[np.arange(1001), labels])
    assert metrics["loss"] == pytest.approx(mean_loss, rel=1e-4)


def _run_sharded(tmp_path, devices: int):
    out = tmp_path / f"d{devices}.npz"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    script = os.path.join(os.path.dirname(__file__), "sharded_steps.py")
    subprocess.run([sys.executable, script, str(out)], check=True, env=env)
    return dict(np.load(out))


def test_sharded_step_matches_single_device(tmp_path):
    one, four = _run_sharded(tmp_path, 1), _run_sharded(tmp_path, 4)
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    assert int(four["shards"]) == 4  # params replicated over all four devices
    np.testing.assert_allclose(four["losses"], one["losses"], atol=1e-5)
    for key in one:
        if key.startswith("["):
            np.testing.assert_allclose(four[key], one[key], atol=1e-5, err_msg=key)


def test_batch_size_must_divide_over_devices(fmnist_train):
    mesh = train.data_mesh()
    with pytest.raises(ValueError, match="exceeds the 10 examples"):
        train.fit(nets.LeNet300100(), optax.sgd(0.1), (fmnist_train[0][:10], fmnist_train[1][:10]),
                  preprocess=FMNIST, epochs=1, batch_size=64, mesh=mesh, progress=False)


def test_label_smoothing_matches_the_smoothed_target_formula():
    logits = jax.random.normal(jax.random.key(0), (6, 10))
    labels = jnp.array([0, 3, 9, 2, 2, 7])
    mask = jnp.array([1.0, 1, 1, 1, 1, 0])
    e = 0.1
    targets = (1 - e) * jax.nn.one_hot(labels, 10) + e / 10
    expected = -jnp.sum(targets * jax.nn.log_softmax(logits), -1)[:5].mean()
    np.testing.assert_allclose(train.cross_entropy(logits, labels, mask, e), expected, rtol=1e-6)
    plain = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:5, 0].mean()
    np.testing.assert_allclose(train.cross_entropy(logits, labels, mask), plain, rtol=1e-6)


def test_recipe_warmup_then_cosine():
    recipe = train.Recipe(epochs=1, learning_rate=1e-3, warmup_steps=100)
    tx = recipe.optimizer(1000)
    params = {"w": jnp.ones(())}
    state = tx.init(params)
    lrs = []
    for _ in range(1000):  # Adam's first step moves by ~lr, so track the step sizes
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        lrs.append(-float(updates["w"]))
    assert lrs[0] < 1e-5 and abs(lrs[100] - 1e-3) < 1e-5 and lrs[50] < lrs[100]
    assert lrs[999] < 1e-5 and lrs[550] < lrs[100]


def test_recipe_sgd_adds_l2_to_the_gradient_and_uses_nesterov_momentum():
    lr, wd, mu = 0.1, 0.01, 0.9
    tx = train.Recipe(epochs=1, learning_rate=lr, weight_decay=wd, sgd_momentum=mu).optimizer(10)
    params = {"w": jnp.array([2.0, -4.0])}
    grads = {"w": jnp.array([0.5, 0.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # first Nesterov step from zero momentum: -lr * (1 + mu) * (g + wd * w)
    expected = -lr * (1 + mu) * (grads["w"] + wd * params["w"])
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)
    adamw = train.Recipe(epochs=1, learning_rate=lr, weight_decay=wd).optimizer(10)
    # AdamW decays decoupled from the gradient: a zero gradient still moves by lr * wd * w
    updates, _ = adamw.update({"w": jnp.zeros(2)}, adamw.init(params), params)
    np.testing.assert_allclose(updates["w"], -lr * wd * params["w"], rtol=1e-6)


def test_fit_minimises_a_custom_loss_over_dict_targets(fmnist_train):
    """A user loss over a dict of targets: the loop batches every array of the dict
    (padding rows zeroed), minimises it and reports its stats per example."""
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    targets = {"label": labels, "weight": np.where(labels < 5, 2.0, 1.0).astype(np.float32)}
    seen_keys = []

    def weighted_loss(logits, target, mask):
        seen_keys.append(sorted(target))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, target["label"])
        weights = target["weight"] * mask
        value = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        return value, {"weighted": jnp.sum(weights)}

    model = nets.LeNet300100(num_classes=10)
    result = train.fit(model, optax.adam(1e-3), (images, targets), epochs=2, batch_size=128,
                       loss=weighted_loss, progress=False)
    assert seen_keys[0] == ["label", "weight"]
    first, last = result.history
    assert last["train_loss"] < first["train_loss"]
    expected = float(np.mean(targets["weight"][:1024]))
    assert abs(first["train_weighted_per_example"] - expected) < 0.1
    assert "train_accuracy" not in first


def test_batches_pad_every_array_of_dict_targets():
    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1)
    targets = {"boxes": np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4) + 1,
               "valid": np.ones((5, 3), bool)}
    batch = list(data.batches(images, targets, 4, shuffle=False, remainder="pad"))[-1]
    assert batch["mask"].tolist() == [1, 0, 0, 0]
    np.testing.assert_array_equal(batch["label"]["boxes"][0], targets["boxes"][4])
    assert not batch["label"]["boxes"][1:].any() and not batch["label"]["valid"][1:].any()
    with pytest.raises(ValueError, match=r"\['weights'\], which it cannot move along"):
        next(data.batches(images, {**targets, "weights": np.ones((5, 3))}, 4,
                          augmenter=data.flip_scenes))


class _SameTrunkThreeLabels(nn.Module):
    """A user model sharing ``_BNWithoutTrainArg``'s trunk names; its head has 3 outputs, not 10."""

    @nn.compact
    def __call__(self, x):
        x = _conv_bn_trunk(self, x)
        return nn.Dense(3, name="head")(x) + nn.Dense(3, name="a_new_layer")(x)


def test_warm_start_copies_the_matching_trunk_and_keeps_the_rest_fresh(fmnist_train):
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    donor = train.fit(_BNWithoutTrainArg(), optax.adam(3e-3), (images, labels), preprocess=FMNIST,
                      epochs=1, batch_size=128, progress=False).variables
    donor = jax.tree.map(lambda v: np.asarray(v, np.float16), donor)  # e.g. a float16 file
    fresh = train.init_variables(_SameTrunkThreeLabels(), FMNIST(images[:1]), 1)
    before = jax.tree.map(np.array, fresh)

    started, copied = train.warm_start(fresh, donor)

    assert copied == ["batch_stats/bn/mean", "batch_stats/bn/var", "params/bn/bias",
                      "params/bn/scale", "params/conv/bias", "params/conv/kernel"]
    for collection, layer, leaf in (name.split("/") for name in copied):
        got = started[collection][layer][leaf]
        assert got.dtype == fresh[collection][layer][leaf].dtype == jnp.float32
        np.testing.assert_array_equal(got, donor[collection][layer][leaf].astype(np.float32))
    # the 3-label head (same path, other shape) and the new layer keep their initial values
    for layer in ("head", "a_new_layer"):
        chex.assert_trees_all_equal(started["params"][layer], before["params"][layer])
    chex.assert_trees_all_equal(fresh, before)  # the input is not changed


def test_warm_start_copies_a_layer_whole_or_not_at_all():
    fresh = {"params": {"conv": {"kernel": jnp.zeros((3, 3, 1, 8)), "bias": jnp.zeros(8)},
                        "bn": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
                        "head": {"kernel": jnp.zeros((4, 10)), "bias": jnp.zeros(10)}},
             "batch_stats": {"bn": {"mean": jnp.zeros(8), "var": jnp.ones(8)}}}
    donor = {"params": {"conv": {"kernel": np.ones((3, 3, 1, 8)), "bias": np.ones(8)},
                        "bn": {"scale": np.full(8, 2.0), "bias": np.ones(8)},
                        "head": {"kernel": np.ones((6, 10)), "bias": np.ones(10)}}}
    # the head's bias fits but its kernel does not; BatchNorm has no statistics in the donor
    started, copied = train.warm_start(fresh, donor)
    assert copied == ["params/conv/bias", "params/conv/kernel"]
    assert not started["params"]["head"]["bias"].any()
    assert (started["params"]["bn"]["scale"] == 1).all()
    donor["batch_stats"] = {"bn": {"mean": np.ones(8), "var": np.full(8, 3.0)}}
    _, copied = train.warm_start(fresh, donor)
    assert copied == ["batch_stats/bn/mean", "batch_stats/bn/var", "params/bn/bias",
                      "params/bn/scale", "params/conv/bias", "params/conv/kernel"]


def test_warm_start_without_a_common_layer_names_both_trees():
    fresh = {"params": {"dense": {"kernel": jnp.zeros((4, 2))}}}
    with pytest.raises(ValueError, match=r"no layer of the donor matches .*params/dense/kernel.*"
                                         r"params/conv/kernel"):
        train.warm_start(fresh, {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 8))}}})
    with pytest.raises(ValueError, match="no layer of the donor matches"):  # same path, other shape
        train.warm_start(fresh, {"params": {"dense": {"kernel": np.zeros((4, 3))}}})
    with pytest.raises(ValueError, match=r"none of the model's collections \['params'\]: pass its "
                                         r"whole variables dict"):  # params given bare
        train.warm_start(fresh, {"dense": {"kernel": np.zeros((4, 2))}})


def test_the_scene_trunk_classifier_starts_every_trunk_layer_of_deeplab():
    from experiments import scene_trunk
    from zylax.nets import DeepLabV3Small

    def zeros(model, shape):  # variables of the right shapes, without running the model
        tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)

    donor = zeros(scene_trunk.classifier(10), (1, 32, 32, 1))
    fresh = zeros(DeepLabV3Small(11), (1, 96, 96, 1))
    _, copied = train.warm_start(fresh, donor)
    trunk = {"stem", "stem_bn", *(f"block{i}" for i in range(17))}
    assert {name.split("/")[1] for name in copied} == trunk
    assert sum(n.startswith("params/") for n in copied) == sum(
        1 for layer in trunk for _ in jax.tree.leaves(fresh["params"][layer]))


def _layers(x, training: bool):
    x = nn.Conv(4, (3, 3), name="conv")(x)
    x = nn.BatchNorm(use_running_average=not training, name="bn")(x)
    x = nn.Dropout(0.5, deterministic=not training)(x)
    return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


class _Training(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = False):
        return _layers(x, training)


class _IsTraining(nn.Module):
    @nn.compact
    def __call__(self, x, is_training: bool = False):
        return _layers(x, is_training)


class _Deterministic(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return _layers(x, not deterministic)


class _Mode(nn.Module):
    """A flag no rule knows: the user names it."""

    @nn.compact
    def __call__(self, x, mode: bool = False):
        return _layers(x, mode)


@pytest.mark.parametrize("model,kwargs", [(_Training(), {"training": True}),
                                          (_IsTraining(), {"is_training": True}),
                                          (_Deterministic(), {"deterministic": False})])
def test_the_training_flag_is_found_by_its_name(model, kwargs, fmnist_train):
    assert train.mode_kwargs(model, True) == kwargs
    images, labels = fmnist_train[0][:256], fmnist_train[1][:256]
    variables = train.init_variables(model, FMNIST(images[:1]), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: training reaches BatchNorm and Dropout
        result = train.fit(model, optax.adam(1e-3), (images, labels), preprocess=FMNIST,
                           epochs=1, progress=False)
    assert not np.array_equal(result.variables["batch_stats"]["bn"]["mean"],
                              variables["batch_stats"]["bn"]["mean"])


def test_an_unrecognised_flag_warns_once_in_one_line_or_is_named(fmnist_train):
    images, labels = fmnist_train[0][:256], fmnist_train[1][:256]
    with pytest.warns(UserWarning, match=r"training leaves bn, Dropout_0 in inference mode.*"
                                         r"train_flag=") as caught:
        train.fit(_Mode(), optax.adam(1e-3), (images, labels), preprocess=FMNIST, epochs=1,
                  progress=False)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert train.mode_kwargs(_Mode(), True, "mode") == {"mode": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = train.fit(_Mode(), optax.adam(1e-3), (images, labels), preprocess=FMNIST,
                          epochs=1, progress=False, train_flag="mode")
    assert float(np.abs(named.variables["batch_stats"]["bn"]["mean"]).sum()) > 0
    with pytest.raises(ValueError, match="has no argument 'phase'"):
        train.mode_kwargs(_Mode(), True, "phase")


@pytest.mark.parametrize("momentum", [0.9, 0.999])
def test_batch_statistics_are_the_mean_batch_moments_whatever_the_momentum(momentum):
    class Norm(nn.Module):
        @nn.compact
        def __call__(self, x, training: bool = False):
            x = nn.Dense(3, name="dense")(x.reshape((x.shape[0], -1)))
            return nn.BatchNorm(use_running_average=not training, momentum=momentum,
                                name="bn")(x)

    model = Norm()
    images = np.random.default_rng(0).integers(0, 256, (40, 2, 2, 1)).astype(np.uint8)
    variables = model.init(jax.random.key(0), images[:1] / 255.0)
    params, collections = train.split_variables(variables)
    out = train.batch_statistics(model, params, dict(collections), images, batch_size=10)
    dense = params["dense"]
    h = images.reshape(40, -1) / 255.0 @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
    batches = h.reshape(4, 10, 3)  # the dense layer's outputs, batch by batch
    np.testing.assert_allclose(out["batch_stats"]["bn"]["mean"], batches.mean(1).mean(0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["batch_stats"]["bn"]["var"], batches.var(1).mean(0),
                               rtol=1e-3, atol=1e-5)
    assert train.batch_statistics(model, params, {}, images) == {}
