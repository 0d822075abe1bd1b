"""Sparse variational dropout (``methods.sparse_vd``): eq. 14's KL, the extraction at
``log alpha >= 3``, the sampled training weights, and a run on a user's model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from test_soft_sharing import UserMLP
from zylax import archive, compress, data, methods, presets
from zylax.methods import variational_dropout as vd


def test_the_kl_is_eq_14_positive_and_falls_as_alpha_grows():
    log_alpha = np.linspace(-8, 8, 33)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    want = -(k1 / (1 + np.exp(-(k2 + k3 * log_alpha))) - 0.5 * np.log1p(np.exp(-log_alpha))
             - k1)
    got = np.asarray(vd.kl_approximation(jnp.asarray(log_alpha)), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got > 0) and np.all(np.diff(got) < 0) and got[-1] < 1e-3


def _state(method, w):
    return method.init({"dense": {"kernel": w}}, jax.random.key(0))


def test_inference_zeroes_the_weights_whose_alpha_passes_the_threshold():
    w = jax.random.normal(jax.random.key(0), (30, 20)) * 0.1
    w = w.at[:3].set(0.0)  # pruned before
    method = methods.sparse_vd(examples=100)
    state = _state(method, w)
    log_sigma2 = state["latent"]["own"][0]["dense/kernel"]["log_sigma2"]
    np.testing.assert_allclose(vd.log_alpha(w, log_sigma2)[3:], method.initial_log_alpha,
                               atol=1e-4)  # one starting rate, whatever the weight's scale
    raised = log_sigma2.at[10:].add(20.0)  # these rows now far above the threshold
    state["latent"]["own"][0]["dense/kernel"]["log_sigma2"] = raised
    out = np.asarray(method.apply(state)["dense"]["kernel"])
    assert np.all(out[:3] == 0) and np.all(out[10:] == 0)
    np.testing.assert_array_equal(out[3:10], np.asarray(w)[3:10])
    stored = archive.decode_bytes(archive.to_bytes({"params": method.store(state)}))[0]
    np.testing.assert_array_equal(stored["params"]["dense"]["kernel"], out)


def test_training_samples_each_weight_around_its_mean_and_keeps_given_zeros():
    w = jnp.full((50, 40), 0.5).at[0].set(0.0)
    method = methods.sparse_vd(examples=100, initial_log_alpha=-2.0)
    state = _state(method, w)
    samples = jnp.stack([method.apply(state, jax.random.key(i))["dense"]["kernel"]
                         for i in range(20)])
    assert np.all(np.asarray(samples[:, 0]) == 0)
    sigma = 0.5 * np.exp(-1.0)  # sqrt(alpha) * |theta|
    np.testing.assert_allclose(np.std(np.asarray(samples[:, 1:])), sigma, rtol=0.05)
    np.testing.assert_allclose(np.mean(np.asarray(samples[:, 1:])), 0.5, atol=0.01)
    assert not np.array_equal(samples[0], samples[1])


def test_the_penalty_is_the_summed_kl_per_example_and_pushes_alpha_up():
    w = jax.random.normal(jax.random.key(1), (20, 10)).at[0].set(0.0)
    method = methods.sparse_vd(examples=400, kl_weight=2.0)
    state = _state(method, w)
    kept = np.asarray(w != 0)
    kl = vd.kl_approximation(jnp.full(w.shape, method.initial_log_alpha))
    want = 2.0 / 400 * float(np.sum(np.asarray(kl)[kept]))
    assert float(method.penalty(state)) == pytest.approx(want, rel=1e-3)
    grads = jax.grad(lambda latent: method.penalty({"latent": latent, "aux": state["aux"]}))(
        state["latent"])
    g_sigma = np.asarray(grads["own"][0]["dense/kernel"]["log_sigma2"])
    g_theta = np.asarray(grads["params"]["dense"]["kernel"])
    assert np.all(g_sigma[kept] < 0)  # descent raises sigma...
    assert np.all(np.sign(g_theta[kept]) == np.sign(np.asarray(w)[kept]))  # ...shrinks theta
    with pytest.raises(ValueError, match="examples"):
        methods.sparse_vd().penalty(state)
    assert methods.sparse_vd().sized(7).examples == 7


@pytest.mark.parametrize("field, value", [("kl_weight", -1.0), ("kl_weight", 1e39), ("threshold", 9.0),
                                          ("initial_log_alpha", float("nan")),
                                          ("log_sigma2_learning_rate", 0.0),
                                          ("examples", 0), ("examples", 2.5)])
def test_bad_settings_are_one_line(field, value):
    with pytest.raises(ValueError, match=f"sparse_vd: {field} must be"):
        methods.sparse_vd(**{field: value})


def test_the_svd_recipe_on_a_users_model_prunes_most_weights_and_keeps_its_accuracy(tmp_path):
    train_data = tuple(a[:6000] for a in data.load("fashion_mnist", "train"))
    test_data = tuple(a[:2000] for a in data.load("fashion_mnist", "test"))
    model = UserMLP()
    variables = model.init(jax.random.key(0), train_data[0][:1] / 255.0)
    trained = compress.train.fit(model, optax.adam(1e-3), train_data, epochs=3,
                                 variables=variables, batch_size=100, progress=False).variables
    chain = methods.build("svd", {"sparse_vd": {"epochs": 3}, "share": {"index_bits": "ans"}})
    assert [m.name for m in chain] == ["sparse_vd", "share"]
    result = compress.run(model, trained, train_data, test_data, chain,
                          out=str(tmp_path / "svd.zyl"), progress=False)
    rep = result.report
    assert rep["learning_rate"] == 1e-3 and not rep["learning_rate_sweep"]  # the paper's
    hidden = np.asarray(result.variables["params"]["hidden"]["kernel"])
    assert np.mean(hidden != 0) < 0.5
    assert rep["compressed_accuracy"] > rep["dense_accuracy"] - 0.02
    assert rep["decoded_exactly"]


def test_the_cli_settings_reach_sparse_vd():
    chain = presets.override({}, "svd", finetune_epochs=3, kl_weight=2.5).chain()
    assert [m.name for m in chain] == ["sparse_vd", "share"]
    assert chain[0].kl_weight == 2.5 and [m.epochs for m in chain] == [3, 3]
    with pytest.raises(ValueError, match="kl_weight sets sparse_vd, which deep does not run"):
        presets.override({}, "deep", kl_weight=2.5)


def test_stage_epochs_set_each_stage_over_the_shared_flags():
    """``--stage-epochs``: the long variational-dropout run, a float retraining with the
    zeros kept and one epoch of sharing, from one command line."""
    chain = presets.override({}, "sparse_vd+prune+share", sparsity=(0.0, {}), kl_weight=0.7,
                             finetune_epochs=3, retrain_epochs=4, unshared_dtype="float16",
                             stage_epochs={"sparse_vd": 100, "prune": 10, "share": 1}).chain()
    assert [m.name for m in chain] == ["sparse_vd", "prune", "share+cast"]
    assert [m.epochs for m in chain[:2]] == [100, 10] and chain[1].sparsity == 0.0
    assert [m.epochs for m in chain[2].members] == [1, 1]  # the cast retrains as long
    with pytest.raises(ValueError, match=r"stage_epochs names prune, which svd does not run "
                                         r"\(its stages: sparse_vd, share\)"):
        presets.override({}, "svd", stage_epochs={"prune": 3})
