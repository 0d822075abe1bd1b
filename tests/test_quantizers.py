import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st_

from zylax import archive, data, nets, train
from zylax.transforms import binary, order, packing, pattern, pruning, ternary
from zylax.transforms import tree as ztree

FMNIST = data.preprocessing("fashion_mnist")


def test_bnn_step_lowers_loss_and_keeps_latent_in_box(fmnist_train):
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    model = nets.MLP(hidden=(256, 256), activation=binary.binary_activation)
    tx = optax.chain(optax.adam(1e-2), binary.clip_latent())
    batch = next(data.batches(images, labels, 512, preprocess=FMNIST, shuffle=False))
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


def _lenet5_variables():
    return nets.LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def _lenet5_params():
    return _lenet5_variables()["params"]


def _lenet5_first_and_last():
    return order.first_and_last(nets.LeNet5(), _lenet5_variables(), jnp.zeros((1, 28, 28, 1)))


def test_lenet5_first_and_last_layers_in_execution_order():
    assert _lenet5_first_and_last() == ["conv1/kernel", "ip2/kernel"]


def test_ttq_scales_get_gradients_and_change_in_training(fmnist_train):
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    latent = ternary.init(_lenet5_params(), skip=_lenet5_first_and_last())
    assert sorted(latent["scales"]) == ["conv2/kernel", "ip1/kernel"]  # first, last stay float
    model = nets.LeNet5()
    batch = next(data.batches(images, labels, 256, preprocess=FMNIST))

    def loss(lat):
        logits = model.apply({"params": ternary.ternarize(lat)}, batch["image"])
        return train.cross_entropy(logits, batch["label"], batch["mask"])
    grads = jax.grad(loss)(latent)
    for name in latent["scales"]:
        assert float(jnp.abs(grads["scales"][name]["w_pos"])) > 0
        assert float(jnp.abs(grads["scales"][name]["w_neg"])) > 0
    result = train.fit(model, optax.adam(1e-3), (images, labels), preprocess=FMNIST,
                       epochs=1, variables={"params": latent}, transform=ternary.ternarize,
                       progress=False)
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
    latent = ternary.init(pruning.apply_masks(params, masks), skip=_lenet5_first_and_last())
    compose = lambda lat: ternary.ternarize({**lat, "params": pruning.apply_masks(lat["params"],
                                                                                  masks)})
    out = compose(latent)
    kernel = np.asarray(out["conv2"]["kernel"])
    assert np.all(kernel[~np.asarray(masks["conv2"]["kernel"])] == 0)
    assert len(np.unique(kernel)) == 3


class _StemBodyHead(nn.Module):
    """A user model whose sorted layer names (body1, body2, head, stem) are not its order."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = nn.relu(nn.Conv(4, (3, 3), name="body1")(x))
        x = nn.relu(nn.Conv(4, (3, 3), name="body2")(x))
        return nn.Dense(3, name="head")(x.reshape((x.shape[0], -1)))


def test_first_and_last_follow_execution_order_not_sorted_names():
    model = _StemBodyHead()
    x = jnp.zeros((1, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    assert ztree.selected_names(variables["params"])[0] == "body1/kernel"  # sorted order
    skip = order.first_and_last(model, variables, x)
    assert skip == ["stem/kernel", "head/kernel"]
    params = variables["params"]
    latent = ternary.init(params, skip=skip)
    assert sorted(latent["scales"]) == ["body1/kernel", "body2/kernel"]
    out = ternary.ternarize(latent)
    for name in ("body1", "body2"):
        assert len(np.unique(np.asarray(out[name]["kernel"]))) <= 3, name
        assert not np.array_equal(out[name]["kernel"], params[name]["kernel"]), name
    for name in ("stem", "head"):  # full precision, bit for bit
        chex.assert_trees_all_equal(out[name], params[name])
    chex.assert_trees_all_equal(out["body1"]["bias"], params["body1"]["bias"])


def _pruned_dense(dtype=jnp.float32):
    w = jax.random.normal(jax.random.key(4), (16, 8)).astype(dtype)
    params = {"fc": {"kernel": w, "bias": jnp.ones(8, dtype)}}
    masks = pruning.sparsity_masks(params, 0.75)
    return pruning.apply_masks(params, masks), masks


def test_binarize_refuses_a_pruned_layer_without_masks_and_keeps_zeros_with_them():
    params, masks = _pruned_dense()
    with pytest.raises(ValueError, match=r"binarize: 'fc/kernel' holds 96 exact zeros"):
        binary.binarize(params)
    out = binary.binarize(params, masks=masks)
    kept = np.asarray(masks["fc"]["kernel"])
    kernel = np.asarray(out["fc"]["kernel"])
    assert np.all(kernel[~kept] == 0) and not np.any(np.signbit(kernel[~kept]))
    np.testing.assert_array_equal(kernel[kept], np.sign(np.asarray(params["fc"]["kernel"])[kept]))
    np.testing.assert_array_equal(out["fc"]["bias"], params["fc"]["bias"])


def test_bfloat16_in_bfloat16_out():
    bf16 = jnp.bfloat16
    params, masks = _pruned_dense(bf16)
    assert params["fc"]["kernel"].dtype == bf16  # apply_masks keeps the dtype
    dense = {"fc": {"kernel": jax.random.normal(jax.random.key(5), (16, 8)).astype(bf16),
                    "bias": jnp.ones(8, bf16)}}
    for tree in (binary.binarize(dense), binary.binarize(params, masks=masks)):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(bf16)}
    latent = ternary.init(dense)
    assert latent["scales"]["fc/kernel"]["w_pos"].dtype == bf16
    assert ternary.ternarize(latent)["fc"]["kernel"].dtype == bf16
    assert ternary.ternarize(latent, masks=masks)["fc"]["kernel"].dtype == bf16
    conv = {"c": {"kernel": jax.random.normal(jax.random.key(6), (3, 3, 4, 8)).astype(bf16)}}
    alpha, patterns = pattern.binarize_patterns(conv)
    assert alpha["c"]["kernel"].dtype == bf16
    assert pattern.apply(alpha, patterns)["c"]["kernel"].dtype == bf16
    # and through the file: the stored scales keep bf16
    for stored, expected in ((ternary.compressed(latent), ternary.ternarize(latent)),
                             (binary.compressed(dense), binary.binarize(dense)),
                             (pattern.compressed(alpha, patterns), pattern.apply(alpha, patterns))):
        decoded, _ = archive.decode_bytes(archive.to_bytes({"params": stored}))
        assert decoded["params"]["fc" if "fc" in expected else "c"]["kernel"].dtype == bf16
        assert ztree.bit_identical(decoded["params"], jax.device_get(expected))


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_prune_then_ttq_keeps_zeros_and_stores_them_in_under_two_bits():
    params = _lenet5_params()
    masks = pruning.sparsity_masks(params, 0.9)
    skip = _lenet5_first_and_last()
    latent = ternary.init(params, skip=skip, masks=masks)  # init zeroes the pruned weights
    assert sorted(latent["scales"]) == ["conv2/kernel", "ip1/kernel"]
    kept = np.asarray(masks["ip1"]["kernel"])
    assert np.all(np.asarray(latent["params"]["ip1"]["kernel"])[~kept] == 0)
    # pruned latent weights that drifted (above the threshold) stay zero through the masks
    drifted = jax.tree.map(lambda w, m: jnp.where(m, w, 0.5 * jnp.max(jnp.abs(w))),
                           latent["params"], masks)
    latent = {**latent, "params": drifted}
    assert np.any(np.asarray(ternary.ternarize(latent)["ip1"]["kernel"])[~kept] != 0)
    out = ternary.ternarize(latent, masks=masks)
    for name in latent["scales"]:
        w = np.asarray(ztree.named_leaves(out)[name])
        m = np.asarray(ztree.named_leaves(masks)[name])
        assert np.all(w[~m] == 0) and not np.any(np.signbit(w[~m])), name
        scales = latent["scales"][name]
        assert set(np.unique(w)) == {0.0, float(scales["w_pos"]), -float(scales["w_neg"])}, name
    blob = archive.to_bytes({"params": ternary.compressed(latent, masks=masks)})
    decoded, _ = archive.decode_bytes(blob)
    expected = ztree.named_leaves(jax.device_get(out))
    got = ztree.named_leaves(decoded["params"])
    assert list(got) == list(expected)
    for name in expected:
        assert _same_bits(got[name], expected[name]), name
    entries = {e["name"]: e for e in archive.read_header_bytes(blob)[0]["leaves"]}
    for name in latent["scales"]:
        entry = entries[name]
        assert entry["method"] == "ternary", name
        bits_per_weight = 8 * sum(entry["bytes"]) / np.size(ztree.named_leaves(params)[name])
        assert bits_per_weight < 1.25, (name, bits_per_weight)


def test_layers_that_never_run_come_last_in_execution_order():
    import flax.linen as nn

    class Net(nn.Module):
        aux: bool = False

        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4, name="stem")(x)
            if self.aux:
                nn.Dense(2, name="aux_head")(h)
            return nn.Dense(3, name="head")(nn.Dense(4, name="body")(h))

    x = jnp.ones((1, 5))
    variables = Net(aux=True).init(jax.random.key(0), x)
    names = order.execution_order(Net(), variables, x)
    assert [n.split("/")[0] for n in names[::2]] == ["stem", "body", "head", "aux_head"]
    assert order.first_and_last(Net(), variables, x) == ["stem/kernel", "head/kernel"]


def test_pruned_float_layers_stay_pruned_under_ttq():
    """The skipped first/last layers keep their pruning: exact zeros, no gradient there."""
    params = {"first": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)},
              "mid": {"kernel": jnp.linspace(-1.0, 1.0, 36).reshape(6, 6)},
              "last": {"kernel": jnp.linspace(1.0, -1.0, 18).reshape(6, 3)}}
    masks = pruning.sparsity_masks(params, 0.5)
    latent = ternary.init(params, skip=["first/kernel", "last/kernel"], masks=masks)
    latent["params"]["last"]["kernel"] = params["last"]["kernel"]  # pruned weights grown back
    out = ternary.ternarize(latent, masks=masks)
    pruned = ~np.asarray(masks["last"]["kernel"])
    assert np.all(np.asarray(out["last"]["kernel"])[pruned] == 0)
    grads = jax.grad(lambda lat: jnp.sum(ternary.ternarize(lat, masks=masks)["last"]["kernel"]))(
        latent)
    assert np.all(np.asarray(grads["params"]["last"]["kernel"])[pruned] == 0)
    stored = ternary.compressed(latent, masks=masks)
    assert np.all(np.asarray(stored["last"]["kernel"])[pruned] == 0)


def test_nan_weights_and_settings_name_the_leaf():
    nan = {"w": {"kernel": jnp.array([[0.5, jnp.nan], [-0.5, 0.2]])}}
    with pytest.raises(ValueError, match="'w/kernel' holds a non-finite value"):
        binary.binarize(nan)
    latent = ternary.init({"w": {"kernel": jnp.array([[0.5, -0.3], [-0.5, 0.2]])}})
    latent["params"]["w"]["kernel"] = nan["w"]["kernel"]
    with pytest.raises(ValueError, match="'w/kernel' holds a non-finite value"):
        ternary.ternarize(latent)
    with pytest.raises(ValueError, match="threshold factor t must lie in"):
        ternary.ternarize(latent, float("nan"))
    with pytest.raises(ValueError, match="bound must be positive and finite"):
        binary.clip_latent(bound=float("nan"))
