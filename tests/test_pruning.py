import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from zylax.transforms import pruning


def _params():
    w = jnp.array([[0.1, -2.0, 0.5], [3.0, -0.05, 0.0]])
    return {"fc": {"kernel": w, "bias": jnp.array([5.0, -7.0, 0.01])}}


def test_han_rule_keeps_weights_above_quality_times_std():
    params = _params()
    w = np.asarray(params["fc"]["kernel"])
    masks = pruning.han_masks(params, quality=0.5)
    expected = np.abs(w) > 0.5 * w.std()
    np.testing.assert_array_equal(masks["fc"]["kernel"], expected)
    np.testing.assert_array_equal(expected, [[False, True, False], [True, False, False]])
    assert bool(masks["fc"]["bias"].all())  # biases untouched by default


def test_han_rule_per_layer_override():
    params = {"a": {"kernel": jnp.arange(1.0, 11.0)}, "b": {"kernel": jnp.arange(1.0, 11.0)}}
    masks = pruning.han_masks(params, quality=0.0, overrides={"b/kernel": 1.0})
    assert int(masks["a"]["kernel"].sum()) == 10
    threshold = np.std(np.arange(1.0, 11.0))
    assert int(masks["b"]["kernel"].sum()) == int((np.arange(1.0, 11.0) > threshold).sum())


def test_target_sparsity_masks_exact_counts_and_ties():
    w = jnp.array([1.0, 1.0, 1.0, 1.0, -5.0, 0.2, 0.3, 4.0])
    masks = pruning.sparsity_masks({"k": {"kernel": w}}, 0.5)["k"]["kernel"]
    assert int(masks.sum()) == 4
    assert bool(masks[4]) and bool(masks[7])  # the two largest |w| survive
    assert not bool(masks[5]) and not bool(masks[6])


def test_global_sparsity_uses_one_threshold():
    params = {"a": {"kernel": jnp.array([1.0, 2.0, 3.0, 4.0])},
              "b": {"kernel": jnp.array([10.0, 20.0, 30.0, 40.0])}}
    with pytest.raises(ValueError, match="'a/kernel': these settings prune every one"):
        pruning.global_sparsity_masks(params, 0.5)
    masks = pruning.global_sparsity_masks(params, 0.5, allow_empty=True)
    assert int(masks["a"]["kernel"].sum()) == 0 and int(masks["b"]["kernel"].sum()) == 4


def test_polynomial_schedule_is_cubic():
    s = lambda t: float(pruning.polynomial_sparsity(t, final=0.9, begin_step=10, end_step=110))
    assert s(0) == 0.0 and s(10) == 0.0 and abs(s(110) - 0.9) < 1e-7 and abs(s(500) - 0.9) < 1e-7
    assert abs(s(60) - 0.9 * (1 - 0.5 ** 3)) < 1e-6


@pytest.mark.parametrize("inner", [optax.adamw(1e-2, weight_decay=0.1),
                                   optax.sgd(0.1, momentum=0.9, nesterov=True)])
def test_pruned_weights_stay_exactly_zero_under_any_optimizer(inner):
    key = jax.random.key(0)
    params = {"l": {"kernel": jax.random.normal(key, (20, 10)), "bias": jnp.ones(10)}}
    masks = pruning.sparsity_masks(params, 0.7)
    params = pruning.apply_masks(params, masks)
    tx = pruning.prune(inner, masks)
    state = tx.init(params)

    @jax.jit
    def step(params, state, i):
        grads = jax.tree.map(lambda p: jnp.sin(p + i) + 1.0, params)  # dense, nonzero grads
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(200):
        params, state = step(params, state, i)
    kernel = np.asarray(params["l"]["kernel"])
    assert np.all(kernel[~np.asarray(masks["l"]["kernel"])] == 0.0)
    assert np.count_nonzero(kernel) == int(masks["l"]["kernel"].sum())


def test_gradual_schedule_reaches_target_without_retracing():
    params = {"l": {"kernel": jax.random.normal(jax.random.key(1), (50, 20))}}
    schedule = lambda count: pruning.cubic_progress(count, end_step=40)  # noqa: E731
    tx = pruning.prune(optax.sgd(0.01), sparsity=0.8, schedule=schedule, update_every=10)
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    kept = []
    for _ in range(60):
        params, state = step(params, state)
        kept.append(float(state.masks["l"]["kernel"].mean()))
    assert kept[0] == 1.0  # schedule at count 0 is sparsity 0
    assert all(a >= b for a, b in zip(kept, kept[1:]))  # never un-prunes
    assert abs(kept[-1] - 0.2) < 1e-6
    assert np.count_nonzero(params["l"]["kernel"]) == 200


def test_masks_survive_orbax_round_trip(tmp_path):
    params = {"l": {"kernel": jax.random.normal(jax.random.key(2), (8, 8))}}
    masks = pruning.sparsity_masks(params, 0.5)
    tx = pruning.prune(optax.adam(1e-3), masks)
    state = tx.init(params)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "ckpt", jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                                    state))
    chex.assert_trees_all_equal(pruning.prune_state_masks(restored), masks)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_names_the_leaf(sparsity):
    with pytest.raises(ValueError, match=r"sparsity for 'fc/kernel' must lie in \[0, 1\)"):
        pruning.sparsity_masks(_params(), sparsity)


def test_negative_quality_names_the_leaf():
    with pytest.raises(ValueError, match="quality for 'fc/kernel' must be finite and >= 0"):
        pruning.han_masks(_params(), quality=-1.0)


def test_nan_weights_name_the_leaf():
    params = _params()
    params["fc"]["kernel"] = params["fc"]["kernel"].at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="'fc/kernel' holds a non-finite value"):
        pruning.han_masks(params)


def test_mask_tree_mismatch_is_reported():
    masks = {"fc": {"kernel": jnp.ones((2, 3), bool)}}
    with pytest.raises(ValueError, match=r"missing \['fc/bias'\]"):
        pruning.apply_masks(_params(), masks)
    bad_shape = {"fc": {"kernel": jnp.ones((3, 2), bool), "bias": jnp.ones(3, bool)}}
    with pytest.raises(ValueError, match="mask for 'fc/kernel' has shape"):
        pruning.apply_masks(_params(), bad_shape)


def test_selection_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="matches no parameter"):
        pruning.han_masks(_params(), include=r".*conv.*")


def test_nan_settings_and_whole_layer_pruning_are_refused():
    params = {"small": {"kernel": jnp.arange(1.0, 16.0)}, "big": {"kernel": jnp.ones((20, 20))}}
    with pytest.raises(ValueError, match="quality for 'big/kernel' must be finite"):
        pruning.han_masks(params, float("nan"))
    with pytest.raises(ValueError, match="'small/kernel': these settings prune every one of its 15"):
        pruning.sparsity_masks(params, 0.97)
    masks = pruning.sparsity_masks(params, 0.97, allow_empty=True)
    assert not np.any(masks["small"]["kernel"])
    with pytest.raises(ValueError, match="must lie in"):
        pruning.sparsity_masks(params, float("nan"))
    nan = {"w": {"kernel": jnp.array([1.0, jnp.nan])}}
    with pytest.raises(ValueError, match="'w/kernel' holds a non-finite value"):
        pruning.sparsity_masks(nan, 0.5)
