import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st_

from zylax import data, nets, train
from zylax.transforms import binary, packing, pattern, pruning, ternary


def test_bnn_step_lowers_loss_and_keeps_latent_in_box(fmnist_train):
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    model = nets.MLP(hidden=(256, 256), activation=binary.binary_activation)
    tx = optax.chain(optax.adam(1e-2), binary.clip_latent())
    batch = next(data.batches(images, labels, 512, name="fashion_mnist", shuffle=False))
    state = train.create_state(model, tx, batch["image"][:1])
    step = train.make_train_step(model, tx, binary.binarize)
    sharded = train.shard_batch(batch, train.data_mesh())
    losses = []
    for _ in range(15):
        state, metrics = step(state, sharded)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.1
    for name, leaf in pruning.ztree.named_leaves(state.params).items():
        if name.endswith("kernel"):
            assert float(jnp.max(jnp.abs(leaf))) <= 1.0, name


def test_binarize_only_touches_selected_leaves():
    params = {"fc": {"kernel": jnp.array([[0.3, -0.2]]), "bias": jnp.array([0.5, -0.5])}}
    out = binary.binarize(params)
    np.testing.assert_array_equal(out["fc"]["kernel"], [[1.0, -1.0]])
    np.testing.assert_array_equal(out["fc"]["bias"], params["fc"]["bias"])
    with pytest.raises(ValueError, match="matches no parameter"):
        binary.binarize(params, include=r".*conv.*")


def _lenet5_params():
    return nets.LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]


def test_ttq_scales_get_gradients_and_change_in_training(fmnist_train):
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    latent = ternary.init(_lenet5_params())
    assert sorted(latent["scales"]) == ["conv2/kernel", "ip1/kernel"]  # first, last stay float
    model = nets.LeNet5()
    batch = next(data.batches(images, labels, 256, name="fashion_mnist"))

    def loss(lat):
        logits = model.apply({"params": ternary.ternarize(lat)}, batch["image"])
        return train.cross_entropy(logits, batch["label"], batch["mask"])
    grads = jax.grad(loss)(latent)
    for name in latent["scales"]:
        assert float(jnp.abs(grads["scales"][name]["w_pos"])) > 0
        assert float(jnp.abs(grads["scales"][name]["w_neg"])) > 0
    result = train.fit(model, optax.adam(1e-3), (images, labels), name="fashion_mnist",
                       epochs=1, params=latent, transform=ternary.ternarize, progress=False)
    for name in latent["scales"]:
        assert float(result.state.params["scales"][name]["w_pos"]) != float(
            latent["scales"][name]["w_pos"])
    quantized = ternary.ternarize(result.state.params)
    assert len(np.unique(np.asarray(quantized["conv2"]["kernel"]))) == 3


def test_ttq_bad_inputs():
    params = _lenet5_params()
    for t in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"t must lie in \(0, 1\)"):
            ternary.init(params, t)
    latent = ternary.init(params)
    latent["scales"]["ip1/kernel"]["w_neg"] = jnp.float32(-1.0)
    with pytest.raises(ValueError, match="w_neg of 'ip1/kernel' must be positive"):
        ternary.ternarize(latent)


def test_pattern_binarization_leaves_1x1_and_dense_bit_identical():
    params = {"c3": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 4, 8))},
              "c1": {"kernel": jax.random.normal(jax.random.key(1), (1, 1, 8, 8))},
              "fc": {"kernel": jax.random.normal(jax.random.key(2), (8, 2)), "bias": jnp.ones(2)}}
    latent, patterns = pattern.binarize_patterns(params)
    assert list(patterns) == ["c3/kernel"] and latent["c3"]["kernel"].shape == (8,)
    out = pattern.apply(latent, patterns)
    for name in ("c1", "fc"):
        chex.assert_trees_all_equal(out[name], params[name])
    w = np.asarray(params["c3"]["kernel"])
    expected = np.abs(w).mean(axis=(0, 1, 2)) * np.where(w >= 0, 1, -1)
    np.testing.assert_allclose(out["c3"]["kernel"], expected, rtol=1e-6)
    # fine-tuning gradient reaches alpha but the pattern is an int constant
    grad = jax.grad(lambda lat: jnp.sum(pattern.apply(lat, patterns)["c3"]["kernel"]))(latent)
    assert grad["c3"]["kernel"].shape == (8,)


def test_pattern_binarization_include_narrows_but_never_takes_1x1():
    params = {"prb": {"pattern": {"kernel": jnp.ones((3, 3, 4, 8))},
                      "pointwise": {"kernel": jnp.ones((1, 1, 4, 8))}},
              "down": {"kernel": jnp.ones((3, 3, 8, 8))}}
    _, patterns = pattern.binarize_patterns(params, include=r".*pattern/kernel")
    assert list(patterns) == ["prb/pattern/kernel"]
    _, patterns = pattern.binarize_patterns(params, include=r".*prb/.*")
    assert list(patterns) == ["prb/pattern/kernel"]
    with pytest.raises(ValueError, match="matches no parameter"):
        pattern.binarize_patterns(params, include=r".*pointwise/kernel")


@settings(max_examples=40, deadline=None)
@given(st_.lists(st_.sampled_from([-1, 1]), min_size=1, max_size=300))
def test_binary_pack_round_trip(values):
    signs = np.asarray(values)
    packed = packing.pack_binary(signs)
    assert packed.size == -(-signs.size // 8)
    np.testing.assert_array_equal(packing.unpack_binary(packed, signs.shape), signs)


@settings(max_examples=40, deadline=None)
@given(st_.lists(st_.sampled_from([-1, 0, 1]), min_size=1, max_size=300))
def test_ternary_pack_round_trip(values):
    t = np.asarray(values)
    packed = packing.pack_ternary(t)
    assert packed.size == -(-t.size // 4)
    np.testing.assert_array_equal(packing.unpack_ternary(packed, t.shape), t)


def test_storage_report_ratios():
    params = {"a": {"kernel": jnp.ones((64, 32))}, "b": {"bias": jnp.ones(7)}}
    rows = {r["name"]: r for r in packing.storage_report(params, {"a/kernel": 1})}
    assert rows["a/kernel"]["packed_bytes"] == 256 and rows["a/kernel"]["ratio"] == 32.0
    assert rows["b/bias"]["packed_bytes"] == 28


def test_prune_then_ternarize_composes():
    params = _lenet5_params()
    masks = pruning.sparsity_masks(params, 0.5)
    latent = ternary.init(pruning.apply_masks(params, masks))
    compose = lambda lat: ternary.ternarize({**lat, "params": pruning.apply_masks(lat["params"],
                                                                                  masks)})
    out = compose(latent)
    kernel = np.asarray(out["conv2"]["kernel"])
    assert np.all(kernel[~np.asarray(masks["conv2"]["kernel"])] == 0)
    assert len(np.unique(kernel)) == 3
