import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax.transforms import pruning, sharing


def test_linear_init_spans_min_to_max_of_kept_weights():
    w = jnp.array([-3.0, -1.0, 0.0, 2.0, 100.0])
    mask = jnp.array([True, True, False, True, False])
    c = sharing.initial_centroids(w, mask, 4, "linear")
    np.testing.assert_allclose(c, [-3.0, -3.0 + 5 / 3, -3.0 + 10 / 3, 2.0], rtol=1e-6)


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


def test_pruned_zeros_are_never_clustered():
    w = jnp.concatenate([jnp.zeros(900), jnp.linspace(1.0, 2.0, 100)])
    mask = w != 0
    result = sharing.kmeans(w, 2, mask=mask)
    assert float(result.codebook.min()) >= 1.0  # no centroid dragged to 0 by the zeros
    assert np.all(np.asarray(result.indices)[:900] == 4)  # k = 2**2: the pruned marker
    latent, aux = sharing.share({"l": {"kernel": w}}, 2, {"l": {"kernel": mask}})
    decoded = sharing.decode(latent, aux)["l"]["kernel"]
    assert np.all(np.asarray(decoded)[:900] == 0.0)


def test_kmeans_and_share_agree_on_pruned_weights():
    w = jax.random.normal(jax.random.key(5), (40, 30))
    mask = jnp.abs(w) > 0.8
    bits, k = 3, 8
    result = sharing.kmeans(w, bits, mask=mask)
    indices = np.asarray(result.indices)
    pruned = ~np.asarray(mask)
    assert pruned.sum() > 0 and np.all(indices[pruned] == k)
    assert np.all(indices[~pruned] < k)
    latent, aux = sharing.share({"l": {"kernel": w}}, bits, {"l": {"kernel": mask}})
    np.testing.assert_array_equal(aux["l/kernel"]["indices"], indices)
    np.testing.assert_array_equal(latent["l"]["kernel"], result.codebook)
    # decode of kmeans' own (codebook, indices): exact zeros where pruned
    decoded = np.asarray(sharing.decode({"l": {"kernel": result.codebook}},
                                        {"l/kernel": {"indices": result.indices}})["l"]["kernel"])
    assert np.all(decoded[pruned] == 0.0) and not np.any(np.signbit(decoded[pruned]))
    np.testing.assert_array_equal(decoded[~pruned], np.asarray(result.codebook)[indices[~pruned]])


def test_bfloat16_params_give_bfloat16_codebooks_and_decode():
    w = jax.random.normal(jax.random.key(6), (32, 16)).astype(jnp.bfloat16)
    params = {"l": {"kernel": w, "bias": jnp.ones(16, jnp.bfloat16)}}
    masks = {"l": {"kernel": jnp.abs(w) > 0.5, "bias": jnp.ones(16, bool)}}
    assert sharing.kmeans(w, 3).codebook.dtype == jnp.bfloat16
    latent, aux = sharing.share(params, 3, masks)
    assert latent["l"]["kernel"].dtype == jnp.bfloat16 and latent["l"]["kernel"].shape == (8,)
    decoded = sharing.decode(latent, aux)
    assert decoded["l"]["kernel"].dtype == jnp.bfloat16 and decoded["l"]["kernel"].shape == w.shape
    assert decoded["l"]["bias"].dtype == jnp.bfloat16
    assert np.all(np.asarray(decoded["l"]["kernel"], np.float32)[~np.asarray(masks["l"]["kernel"])]
                  == 0)


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
    latent, aux = sharing.share({"l": {"kernel": w}}, 4, {"l": {"kernel": mask}})

    def loss(params):
        return jnp.sum(jnp.sin(params["l"]["kernel"]) * target)

    codebook_grad = jax.grad(lambda lat: loss(sharing.decode(lat, aux)))(latent)["l"]["kernel"]
    weight_grad = jax.grad(loss)(sharing.decode(latent, aux))["l"]["kernel"]
    indices = aux["l/kernel"]["indices"].astype(jnp.int32)
    np.testing.assert_array_equal(indices == 16, ~mask)  # pruned weights point past the codebook
    expected = jax.ops.segment_sum(jnp.where(mask, weight_grad, 0).ravel(),
                                   jnp.where(mask, indices, 0).ravel(), num_segments=16)
    np.testing.assert_allclose(codebook_grad, expected, rtol=1e-5, atol=1e-6)


def test_default_bits_follow_han():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)) * jnp.arange(4.0)},
              "fc": {"kernel": jnp.arange(64.0).reshape(8, 8), "bias": jnp.ones(8)}}
    latent, aux = sharing.share(params)
    assert latent["conv"]["kernel"].shape == (256,) and latent["fc"]["kernel"].shape == (32,)
    assert latent["fc"]["bias"].shape == (8,) and "fc/bias" not in aux
    latent, _ = sharing.share(params, {"fc/.*": 3})
    assert latent["fc"]["kernel"].shape == (8,) and latent["conv"]["kernel"].shape == (256,)


@pytest.mark.parametrize("bits", [0, 17, 2.5, -1])
def test_bad_bits_name_the_leaf(bits):
    params = {"fc": {"kernel": jnp.ones((4, 4))}}
    with pytest.raises(ValueError, match="bits for 'fc/kernel' must be an integer in 1..16"):
        sharing.share(params, bits)


def test_nan_weights_are_rejected():
    params = {"fc": {"kernel": jnp.array([1.0, jnp.nan])}}
    with pytest.raises(ValueError, match="'fc/kernel' holds a non-finite value"):
        sharing.share(params, 2)


def test_centroid_only_freezes_everything_else():
    import optax
    params = {"fc": {"kernel": jnp.arange(16.0).reshape(4, 4), "bias": jnp.ones(4)}}
    latent, aux = sharing.share(params, 2)
    tx = sharing.centroid_only(optax.sgd(1.0), latent, aux)
    grads = jax.tree.map(jnp.ones_like, latent)
    updates, _ = tx.update(grads, tx.init(latent), latent)
    assert np.all(np.asarray(updates["fc"]["bias"]) == 0)
    assert np.all(np.asarray(updates["fc"]["kernel"]) == -1)


def test_a_layer_pruned_whole_is_refused_not_given_a_nan_codebook():
    params = {"a": {"kernel": jnp.arange(1.0, 5.0)}, "b": {"kernel": jnp.arange(10.0, 50.0, 10)}}
    masks = pruning.global_sparsity_masks(params, 0.5, allow_empty=True)
    with pytest.raises(ValueError, match="share: 'a/kernel' has no kept weight"):
        sharing.share(params, 2, masks)
