import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import methods
from zylax.transforms import pruning, sharing

KEY = jax.random.key(0)


def _shared(params, bits=None, **settings):
    """``(method, state)`` of ``methods.share`` on ``params`` (zeros: pruned weights)."""
    method = methods.share(bits=bits, **settings)
    return method, method.init(params, KEY)


def _pruned(w, mask):
    return jnp.where(mask, w, 0)


def test_linear_init_spans_min_to_max_of_kept_weights():
    w = jnp.array([-3.0, -1.0, 0.0, 2.0, 100.0])
    mask = jnp.array([True, True, False, True, False])
    c = sharing.initial_centroids(w, mask, 4, "linear")
    np.testing.assert_allclose(c, [-3.0, -3.0 + 5 / 3, -3.0 + 10 / 3, 2.0], rtol=1e-6)
    w = jax.random.normal(jax.random.key(6), (500,))
    for k in (1, 2, 4, 32, 256):  # as jnp.linspace spaces them, to the last bit or two
        np.testing.assert_allclose(sharing.initial_centroids(w, jnp.ones(500, bool), k),
                                   jnp.linspace(w.min(), w.max(), k), rtol=0, atol=5e-7)


def test_density_init_follows_the_cdf():
    w = jnp.arange(100.0)
    c = sharing.initial_centroids(w, jnp.ones(100, bool), 4, "density")
    np.testing.assert_array_equal(c, [12.0, 37.0, 62.0, 87.0])


def test_inertia_never_increases_and_matches_direct_computation():
    w = jax.random.laplace(jax.random.key(0), (4000,))
    for init in sharing.INITS:
        result = sharing.kmeans(w, 4, init, seed=3)
        history = np.asarray(result.inertia)
        assert np.all(np.diff(history) <= 1e-4 * history[0]), init
        direct = float(jnp.sum((w - result.codebook[result.indices]) ** 2))
        assert abs(direct - history[-1]) <= 1e-3 * direct


def test_kmeans_is_a_fixed_point_of_lloyd():
    w = np.asarray(jax.random.normal(jax.random.key(1), (5000,)))
    result = sharing.kmeans(w, 3)
    codebook, indices = np.asarray(result.codebook), np.asarray(result.indices)
    # every weight sits at its nearest centroid, every centroid at its cluster's mean
    nearest = np.argmin(np.abs(w[:, None] - codebook[None, :]), axis=1)
    np.testing.assert_array_equal(indices, nearest)
    for k in range(codebook.size):
        if np.any(indices == k):
            assert abs(w[indices == k].mean() - codebook[k]) < 1e-4


def test_pruned_entries_change_nothing_and_one_program_serves_every_width():
    w = jax.random.laplace(jax.random.key(2), (3000,))
    grid = 0.1 * jax.random.randint(jax.random.key(7), (3000,), -4, 5) + 0.03  # ties
    mask = jnp.abs(w) > 0.3
    extra = jax.random.normal(jax.random.key(3), (2000,)) * 100  # pruned: must not count
    sharing._kmeans.clear_cache()
    for bits, init in [(1, "linear"), (2, "linear"), (5, "density"), (8, "random")]:
        for weights in (w, grid):
            alone = sharing.kmeans(weights, bits, init, mask, seed=4)
            wider = sharing.kmeans(jnp.concatenate([weights, extra]), bits, init,
                                   jnp.concatenate([mask, jnp.zeros(2000, bool)]), seed=4)
            np.testing.assert_array_equal(alone.codebook, wider.codebook)
            np.testing.assert_array_equal(alone.indices, wider.indices[:3000])
            assert np.all(np.asarray(wider.indices[3000:]) == 2 ** bits)
    # 3,000 and 5,000 weights are padded to 4,096 and 8,192; every width <= 8 shares them
    assert sharing._kmeans._cache_size() == 2 * 3
    sharing.kmeans(w.reshape(60, 50), 3)
    assert sharing._kmeans._cache_size() == 2 * 3


def test_large_weights_never_get_the_pruned_marker():
    top = np.float32(1.10541016e8)
    for seed in range(8):  # random starts can put both centroids on one side
        assert np.all(np.asarray(sharing.kmeans(jnp.array([-top, top]), 1, "random",
                                                seed=seed).indices) < 2)
    huge = jnp.array([-2e38, -1e38, 0.0, 1e38, 2e38])
    found = sharing.kmeans(huge, 1)
    assert np.all(np.isfinite(np.asarray(found.codebook)))
    assert np.asarray(found.indices).max() < 2


def test_pruned_zeros_are_never_clustered():
    w = jnp.concatenate([jnp.zeros(900), jnp.linspace(1.0, 2.0, 100)])
    mask = w != 0
    result = sharing.kmeans(w, 2, mask=mask)
    assert float(result.codebook.min()) >= 1.0  # no centroid dragged to 0 by the zeros
    assert np.all(np.asarray(result.indices)[:900] == 4)  # k = 2**2: the pruned marker
    method, state = _shared({"l": {"kernel": _pruned(w, mask)}}, 2)
    decoded = method.apply(state)["l"]["kernel"]
    assert np.all(np.asarray(decoded)[:900] == 0.0)
    assert float(jnp.min(state["latent"]["params"]["l"]["kernel"])) >= 1.0


def test_kmeans_and_share_agree_on_pruned_weights():
    w = jax.random.normal(jax.random.key(5), (40, 30))
    mask = jnp.abs(w) > 0.8
    bits, k = 3, 8
    result = sharing.kmeans(w, bits, mask=mask)
    indices = np.asarray(result.indices)
    pruned = ~np.asarray(mask)
    assert pruned.sum() > 0 and np.all(indices[pruned] == k)
    assert np.all(indices[~pruned] < k)
    method, state = _shared({"l": {"kernel": _pruned(w, mask)}}, bits)
    np.testing.assert_array_equal(state["aux"][0]["l/kernel"]["indices"], indices)
    np.testing.assert_array_equal(state["latent"]["params"]["l"]["kernel"], result.codebook)
    decoded = np.asarray(method.apply(state)["l"]["kernel"])  # exact zeros where pruned
    assert np.all(decoded[pruned] == 0.0) and not np.any(np.signbit(decoded[pruned]))
    np.testing.assert_array_equal(decoded[~pruned], np.asarray(result.codebook)[indices[~pruned]])


def test_bfloat16_params_give_bfloat16_codebooks_and_decode():
    w = jax.random.normal(jax.random.key(6), (32, 16)).astype(jnp.bfloat16)
    mask = jnp.abs(w) > 0.5
    params = {"l": {"kernel": _pruned(w, mask), "bias": jnp.ones(16, jnp.bfloat16)}}
    assert sharing.kmeans(w, 3).codebook.dtype == jnp.bfloat16
    method, state = _shared(params, 3)
    latent = state["latent"]["params"]
    assert latent["l"]["kernel"].dtype == jnp.bfloat16 and latent["l"]["kernel"].shape == (8,)
    decoded = method.apply(state)
    assert decoded["l"]["kernel"].dtype == jnp.bfloat16 and decoded["l"]["kernel"].shape == w.shape
    assert decoded["l"]["bias"].dtype == jnp.bfloat16
    assert np.all(np.asarray(decoded["l"]["kernel"], np.float32)[~np.asarray(mask)] == 0)


def test_deterministic_for_a_seed():
    w = jax.random.normal(jax.random.key(2), (3000,))
    a, b = sharing.kmeans(w, 5, "random", seed=7), sharing.kmeans(w, 5, "random", seed=7)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_codebook_gradient_is_segment_sum_of_weight_gradients():
    key1, key2 = jax.random.split(jax.random.key(3))
    w = jax.random.normal(key1, (30, 20))
    mask = jnp.abs(w) > 0.3
    target = jax.random.normal(key2, (30, 20))
    method, state = _shared({"l": {"kernel": _pruned(w, mask)}}, 4)

    def loss(params):
        return jnp.sum(jnp.sin(params["l"]["kernel"]) * target)

    def decode(latent):
        return method.apply({"latent": latent, "aux": state["aux"]})

    codebook_grad = jax.grad(lambda lat: loss(decode(lat)))(state["latent"])["params"]["l"][
        "kernel"]
    weight_grad = jax.grad(loss)(decode(state["latent"]))["l"]["kernel"]
    indices = state["aux"][0]["l/kernel"]["indices"].astype(jnp.int32)
    np.testing.assert_array_equal(indices == 16, ~mask)  # pruned weights point past the codebook
    expected = jax.ops.segment_sum(jnp.where(mask, weight_grad, 0).ravel(),
                                   jnp.where(mask, indices, 0).ravel(), num_segments=16)
    np.testing.assert_allclose(codebook_grad, expected, rtol=1e-5, atol=1e-6)


def test_default_bits_follow_han():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)) * jnp.arange(4.0)},
              "fc": {"kernel": jnp.arange(64.0).reshape(8, 8), "bias": jnp.ones(8)}}
    _, state = _shared(params)
    latent = state["latent"]["params"]
    assert latent["conv"]["kernel"].shape == (256,) and latent["fc"]["kernel"].shape == (32,)
    assert latent["fc"]["bias"].shape == (8,) and "fc/bias" not in state["aux"][0]
    _, state = _shared(params, {"fc/.*": 3})
    latent = state["latent"]["params"]
    assert latent["fc"]["kernel"].shape == (8,) and latent["conv"]["kernel"].shape == (256,)


@pytest.mark.parametrize("bits", [0, 17, 2.5, -1])
def test_bad_bits_name_the_leaf(bits):
    params = {"fc": {"kernel": jnp.ones((4, 4))}}
    with pytest.raises(ValueError, match="bits for '.*' must be an integer in 1..16"):
        _shared(params, {".*": bits} if bits != 0 else bits)


def test_nan_weights_are_rejected():
    params = {"fc": {"kernel": jnp.array([1.0, jnp.nan])}}
    with pytest.raises(ValueError, match="'fc/kernel' holds a non-finite value"):
        _shared(params, 2)


def test_the_codebooks_train_and_the_pruned_float_leaves_keep_their_zeros():
    import optax
    params = {"fc": {"kernel": jnp.arange(16.0).reshape(4, 4), "bias": jnp.ones(4)},
              "out": {"kernel": jnp.array([[0.0, 1.0], [2.0, 0.0]])}}
    method, state = _shared(params, 2, include=".*fc/kernel")
    tx = method.tx(optax.sgd(0.5))
    latent = state["latent"]
    grads = jax.tree.map(jnp.ones_like, latent)
    updates, _ = tx.update(grads, tx.init(latent), latent)
    assert np.all(np.asarray(updates["params"]["fc"]["kernel"]) == -0.5)  # the codebook
    assert np.all(np.asarray(updates["params"]["fc"]["bias"]) == -0.5)  # float: trained
    after = np.asarray(latent["params"]["out"]["kernel"] + updates["params"]["out"]["kernel"])
    np.testing.assert_array_equal(after, [[0.0, 0.5], [1.5, 0.0]])  # zeros kept, others move


def test_a_layer_pruned_whole_is_refused_not_given_a_nan_codebook():
    params = {"a": {"kernel": jnp.arange(1.0, 5.0)}, "b": {"kernel": jnp.arange(10.0, 50.0, 10)}}
    masks = pruning.global_sparsity_masks(params, 0.5, allow_empty=True)
    with pytest.raises(ValueError, match="share: 'a/kernel' has no kept weight"):
        _shared(pruning.apply_masks(params, masks), 2)
