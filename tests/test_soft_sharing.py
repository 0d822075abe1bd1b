"""Soft weight-sharing (``methods.soft_share``): the mixture prior of Ullrich et al. (eqs. 4-7),
its snap to component means, the file it writes, and a real run on Fashion-MNIST."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import archive, compress, data, methods, presets
from zylax.methods.soft_sharing import power_of_two, shared_leaf, the_mixture
from zylax.transforms import mixture as mix


def _mixture():
    return mix.Mixture(jnp.array([-2.0, 1.0, 3.0]), jnp.array([4.0, 0.0, 1.0, 2.0]),
                       jnp.array([0.3, -0.2, 0.1]))


def test_the_prior_is_the_mixture_density_with_the_zero_component_fixed():
    mixture, pi0 = _mixture(), 0.9
    weights = np.exp(np.asarray(mix.log_mixing(mixture, pi0), np.float64))
    assert weights.sum() == pytest.approx(1.0) and weights[0] == pytest.approx(pi0)
    u = jnp.array([-2.5, -0.1, 0.0, 0.7, 4.0])
    means = np.array([0.0, -2.0, 1.0, 3.0])
    precisions = np.exp(np.asarray(mixture.log_precisions, np.float64))
    density = np.sum(weights * np.sqrt(precisions / (2 * math.pi))
                     * np.exp(-0.5 * precisions * (np.asarray(u)[:, None] - means) ** 2), axis=1)
    kept = jnp.array([True, True, False, True, True])
    got = float(mix.negative_log_prior(u, kept, mixture, pi0))
    assert got == pytest.approx(-np.sum(np.log(density[np.asarray(kept)])), rel=1e-5)
    # each weight goes to its most responsible component
    joint = np.log(weights) + 0.5 * np.log(precisions) - 0.5 * precisions * (
        np.asarray(u)[:, None] - means) ** 2
    np.testing.assert_array_equal(mix.assignments(u, mixture, pi0), np.argmax(joint, axis=1))


def test_the_hyper_prior_is_the_gamma_log_density_up_to_a_constant():
    mixture = _mixture()
    gammas = np.asarray(mixture.log_precisions, np.float64)
    a, b = np.array([50.0, 3.0, 3.0, 3.0]), np.array([2.0, 0.5, 0.5, 0.5])
    want = np.sum((1 - a) * gammas + b * np.exp(gammas))
    assert float(mix.negative_log_hyper_prior(mixture, (50.0, 2.0), (3.0, 0.5))) == \
        pytest.approx(want, rel=1e-6)


def test_inference_snaps_every_weight_to_its_components_mean_and_keeps_given_zeros():
    w = jax.random.normal(jax.random.key(0), (40, 30)) * 0.1
    w = w.at[:5].set(0.0)  # pruned before
    method = methods.soft_share(examples=100, initial_std=0.25)
    params = {"dense": {"kernel": w}}
    state = method.init(params, jax.random.key(1))
    snapped = method.apply(state)["dense"]["kernel"]
    assert snapped.dtype == w.dtype
    assert np.all(np.asarray(snapped[:5]) == 0)
    mixture = the_mixture(state["latent"]["own"][0])
    scale = state["aux"][0]["dense/kernel"]["scale"]
    allowed = np.asarray(mix.all_means(mixture) * scale, np.float32)
    assert set(np.unique(np.asarray(snapped))) <= set(allowed.tolist())
    assert 2 < np.unique(np.asarray(snapped)).size <= method.components
    # training runs the float weights
    np.testing.assert_array_equal(method.apply(state, jax.random.key(2))["dense"]["kernel"], w)


def test_the_prior_pulls_weights_onto_its_components_and_tightens():
    w = jax.random.normal(jax.random.key(3), (64, 64)) * 0.05
    method = methods.soft_share(examples=1, tau=1.0, initial_std=0.25)
    state = method.init({"d": {"kernel": w}}, jax.random.key(0))
    tx = method.tx(optax.adam(1e-3))
    opt = tx.init(state["latent"])

    def snap_error(latent):
        full = {"latent": latent, "aux": state["aux"]}
        return float(jnp.mean(jnp.abs(method.apply(full)["d"]["kernel"] - latent["params"]["d"]
                                      ["kernel"])))

    @jax.jit
    def step(latent, opt):
        grads = jax.grad(lambda lat: method.penalty({"latent": lat, "aux": state["aux"]}))(latent)
        updates, opt = tx.update(grads, opt, latent)
        return optax.apply_updates(latent, updates), opt

    latent, before = state["latent"], snap_error(state["latent"])
    sigma_before = float(jnp.mean(jnp.exp(-0.5 * the_mixture(latent["own"][0]).log_precisions)))
    for _ in range(300):
        latent, opt = step(latent, opt)
    sigma_after = float(jnp.mean(jnp.exp(-0.5 * the_mixture(latent["own"][0]).log_precisions)))
    assert snap_error(latent) < 0.5 * before
    assert sigma_after < sigma_before


def test_one_mixture_serves_every_layer_each_in_its_own_scale():
    params = {"a": {"kernel": jnp.linspace(-1, 1, 60).reshape(6, 10)},
              "b": {"kernel": jnp.linspace(-0.01, 0.03, 20).reshape(4, 5)}}
    method = methods.soft_share(examples=10)
    state = method.init(params, jax.random.key(0))
    own, aux = state["latent"]["own"][0], state["aux"][0]
    assert sum(1 for o in own.values() if o) == 1
    assert float(aux["a/kernel"]["scale"]) == 0.5 and float(aux["b/kernel"]["scale"]) == 2 ** -6
    snapped = method.apply(state)  # the small layer is not pruned away for its scale
    assert np.count_nonzero(np.asarray(snapped["b"]["kernel"])) > 4
    assert float(power_of_two(jnp.float32(0.3))) == 0.25


def test_the_snapped_weights_pass_the_gradient_straight_through():
    params = {"d": {"kernel": jax.random.normal(jax.random.key(0), (20, 30)) * 0.1}}
    method = methods.soft_share(examples=10)
    state = method.init(params, jax.random.key(1))
    grads = jax.grad(lambda latent: jnp.sum(jnp.arange(600.0).reshape(20, 30) * method.apply(
        {"latent": latent, "aux": state["aux"]})["d"]["kernel"]))(state["latent"])
    np.testing.assert_array_equal(grads["params"]["d"]["kernel"],
                                  np.arange(600.0).reshape(20, 30))


def test_the_stored_leaf_holds_only_the_values_used_and_decodes_exactly():
    values = np.array([0.0, -0.5, 0.25, 0.25, 1.0], np.float32)  # two equal means merge
    picked = np.array([[0, 1, 2], [3, 3, 0]])
    leaf = shared_leaf(values, picked)
    np.testing.assert_array_equal(leaf.codebook, [-0.5, 0.25])
    blob = archive.to_bytes({"params": {"d": {"kernel": leaf}}})
    decoded, _ = archive.decode_bytes(blob)
    np.testing.assert_array_equal(decoded["params"]["d"]["kernel"], values[picked])


@pytest.mark.parametrize("settings, message", [
    ({"components": 1}, "components"), ({"zero_mixing": 1.0}, "zero_mixing"),
    ({"tau": -1.0}, "tau"), ({"examples": 0}, "examples"), ({"hyper": (0.0, 1.0)}, "hyper"),
    ({"prior_learning_rates": (1e-3, 1e-3)}, "prior_learning_rates"),
    ({"zero_hyper": "12"}, "zero_hyper"), ({"prior_learning_rates": "123"}, "prior_learning_rates"),
    ({"zero_mixing": "0.9"}, "zero_mixing"), ({"zero_mixing": None}, "zero_mixing"),
    ({"tau": True}, "tau"), ({"hyper": 5.0}, "hyper"), ({"initial_std": 1e-20}, "initial_std"),
    ({"examples": 3.0}, "examples")])
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        methods.soft_share(**settings)


def test_without_the_training_set_size_the_penalty_says_so():
    method = methods.soft_share()
    state = method.init({"d": {"kernel": jnp.ones((3, 3))}}, jax.random.key(0))
    with pytest.raises(ValueError, match="examples"):
        method.penalty(state)
    assert method.sized(500).examples == 500 and methods.soft_share(examples=7).sized(9).examples == 7
    assert methods.soft_share(components=np.int64(9), examples=np.int64(30)).components == 9


def test_the_sws_recipe_shares_four_bits_and_the_cli_sets_its_epochs():
    soft, share = methods.build("sws")
    assert soft.name == "soft_share" and share.bits == 4
    assert methods.build("sws", {"share": {"bits": 6}})[1].bits == 6  # given settings win
    chain = presets.override({}, "sws", finetune_epochs=2).chain()  # zylax compress flags
    assert [m.epochs for m in chain] == [2, 2]


class UserMLP(nn.Module):
    """A user's own MLP with BatchNorm, Dropout and a ``training`` flag."""

    @nn.compact
    def __call__(self, x, training: bool = False):
        x = nn.Dense(128, use_bias=False, name="hidden")(x.reshape((x.shape[0], -1)))
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = nn.Dropout(0.2, deterministic=not training)(x)
        return nn.Dense(10, name="out")(x)


def test_the_sws_recipe_on_a_users_model_writes_a_small_file_that_keeps_its_accuracy(tmp_path):
    train_data = tuple(a[:6000] for a in data.load("fashion_mnist", "train"))
    test_data = tuple(a[:2000] for a in data.load("fashion_mnist", "test"))
    model = UserMLP()
    variables = model.init(jax.random.key(0), train_data[0][:1] / 255.0)
    tx = optax.adam(1e-3)
    trained = compress.train.fit(model, tx, train_data, epochs=3, variables=variables,
                                 batch_size=100, progress=False).variables
    chain = methods.build("sws", {"soft_share": {"epochs": 3}, "share": {"bits": 4}})
    result = compress.run(model, trained, train_data, test_data, chain, out=str(tmp_path / "sws.zyl"), progress=False,
                          retrain=compress.Retrain(learning_rate=1e-3))
    rep = result.report
    kernels = [np.asarray(layer["kernel"]) for layer in result.variables["params"].values()
               if "kernel" in layer]
    assert "batch_stats" in result.variables
    assert all(np.unique(k).size <= 17 for k in kernels)
    assert rep["ratio"] > 10
    assert rep["compressed_accuracy"] > rep["dense_accuracy"] - 0.03
    assert rep["decoded_exactly"]

