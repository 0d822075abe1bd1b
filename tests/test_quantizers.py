"""TTQ, BNN and SEP-Net patterns through their methods: gradients, execution order, zeros kept,
dtypes, storage; and the bit packing they are stored with."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st_

from zylax import archive, data, methods, nets, train
from zylax.coding import packing
from zylax.transforms import binary, order
from zylax.transforms import tree as ztree

FMNIST = data.preprocessing("fashion_mnist")
KEY = jax.random.key(0)


def _lenet5_variables():
    return nets.LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def _bound(method):
    return method.bind(nets.LeNet5(), _lenet5_variables(), jnp.zeros((1, 28, 28, 1)))


def test_bnn_steps_lower_the_loss_and_keep_the_latent_weights_in_the_box(fmnist_train):
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    model = nets.MLP(hidden=(256, 256), activation=binary.binary_activation)
    variables = train.init_variables(model, FMNIST(images[:1]), 0)
    method = methods.binary(scale=None, keep_float=())
    state = method.init(variables["params"], KEY)
    tx = method.tx(optax.adam(1e-2))
    batch = next(data.batches(images, labels, 512, preprocess=FMNIST, shuffle=False))
    train_state = train.create_state(model, tx, batch["image"][:1],
                                     variables={**variables, "params": state["latent"]},
                                     aux=state["aux"])
    step = train.make_train_step(model, tx, method)
    sharded = train.shard_batch(batch, train.data_mesh())
    losses = []
    for _ in range(15):
        train_state, metrics = step(train_state, sharded)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.1
    for name, leaf in ztree.named_leaves(train_state.params["params"]).items():
        if name.endswith("kernel"):
            assert float(jnp.max(jnp.abs(leaf))) <= 1.0, name


def test_binary_takes_only_its_leaves_and_bnn_signs_are_plus_minus_one():
    params = {"fc": {"kernel": jnp.array([[0.3, -0.2]]), "bias": jnp.array([0.5, -0.5])}}
    method = methods.binary(scale=None, keep_float=())
    out = method.apply(method.init(params, KEY))
    np.testing.assert_array_equal(out["fc"]["kernel"], [[1.0, -1.0]])
    np.testing.assert_array_equal(out["fc"]["bias"], params["fc"]["bias"])
    with pytest.raises(ValueError, match="selects no leaf"):
        methods.binary(include=r".*conv.*", keep_float=()).init(params, KEY)


def test_lenet5_first_and_last_layers_in_execution_order():
    assert _bound(methods.ternary()).exclude == ("conv1/kernel", "ip2/kernel")
    with pytest.raises(ValueError, match=r"call .bind\(model, variables, sample\) first"):
        methods.ternary().init(_lenet5_variables()["params"], KEY)


def test_ttq_scales_get_gradients_and_change_in_training(fmnist_train):
    images, labels = fmnist_train[0][:1024], fmnist_train[1][:1024]
    method = _bound(methods.ternary())
    state = method.init(_lenet5_variables()["params"], KEY)
    (own,) = state["latent"]["own"]
    assert sorted(own) == ["conv2/kernel", "ip1/kernel"]  # first, last stay float
    model = nets.LeNet5()
    batch = next(data.batches(images, labels, 256, preprocess=FMNIST))

    def loss(latent):
        params = method.apply({"latent": latent, "aux": state["aux"]})
        return train.cross_entropy(model.apply({"params": params}, batch["image"]),
                                   batch["label"], batch["mask"])
    grads = jax.grad(loss)(state["latent"])
    for name in own:
        assert float(jnp.abs(grads["own"][0][name]["w_pos"])) > 0
        assert float(jnp.abs(grads["own"][0][name]["w_neg"])) > 0
    result = train.fit(model, method.tx(optax.adam(1e-3)), (images, labels), preprocess=FMNIST,
                       epochs=1, variables={"params": state["latent"]}, method=method,
                       aux=state["aux"], progress=False)
    tuned = {"latent": result.state.params, "aux": state["aux"]}
    for name in own:
        assert float(tuned["latent"]["own"][0][name]["w_pos"]) != float(own[name]["w_pos"])
    quantized = method.apply(tuned)
    assert len(np.unique(np.asarray(quantized["conv2"]["kernel"]))) == 3


def test_ttq_threshold_is_checked_and_traceable():
    for t in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"t must lie in \(0, 1\)"):
            methods.ternary(t=t)
    params = {"w": {"kernel": jax.random.normal(KEY, (32, 16))}}

    def zeros_at(t):
        method = methods.ternary(t=t, keep_float=())
        return jnp.mean(method.apply(method.init(params, KEY))["w"]["kernel"] == 0)
    fractions = jax.vmap(zeros_at)(jnp.array([0.02, 0.2, 0.6]))
    assert fractions[0] < fractions[1] < fractions[2]


def test_pattern_binarization_leaves_1x1_and_dense_bit_identical():
    params = {"c3": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 4, 8))},
              "c1": {"kernel": jax.random.normal(jax.random.key(1), (1, 1, 8, 8))},
              "fc": {"kernel": jax.random.normal(jax.random.key(2), (8, 2)), "bias": jnp.ones(2)}}
    method = methods.pattern()
    state = method.init(params, KEY)
    assert list(state["aux"][0]) == ["c3/kernel"]
    assert state["latent"]["params"]["c3"]["kernel"].shape == (8,)
    out = method.apply(state)
    for name in ("c1", "fc"):
        chex.assert_trees_all_equal(out[name], params[name])
    w = np.asarray(params["c3"]["kernel"])
    expected = np.abs(w).mean(axis=(0, 1, 2)) * np.where(w >= 0, 1, -1)
    np.testing.assert_allclose(out["c3"]["kernel"], expected, rtol=1e-6)
    grad = jax.grad(lambda latent: jnp.sum(method.apply(
        {"latent": latent, "aux": state["aux"]})["c3"]["kernel"]))(state["latent"])
    assert grad["params"]["c3"]["kernel"].shape == (8,)  # alpha trains, the pattern is fixed


def test_pattern_include_narrows_but_never_takes_1x1():
    params = {"prb": {"pattern": {"kernel": jnp.ones((3, 3, 4, 8))},
                      "pointwise": {"kernel": jnp.ones((1, 1, 4, 8))}},
              "down": {"kernel": jnp.ones((3, 3, 8, 8))}}
    assert methods.pattern(include=r".*pattern/kernel").selected(params) == [
        "prb/pattern/kernel"]
    assert methods.pattern(include=r".*prb/.*").selected(params) == ["prb/pattern/kernel"]
    assert methods.pattern(include=r".*pointwise/kernel").selected(params) == []


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
    assert order.first_and_last(model, variables, x) == ["stem/kernel", "head/kernel"]
    params = variables["params"]
    method = methods.ternary().bind(model, variables, x)
    state = method.init(params, KEY)
    assert sorted(state["aux"][0]) == ["body1/kernel", "body2/kernel"]
    out = method.apply(state)
    for name in ("body1", "body2"):
        assert len(np.unique(np.asarray(out[name]["kernel"]))) <= 3, name
        assert not np.array_equal(out[name]["kernel"], params[name]["kernel"]), name
    for name in ("stem", "head"):  # full precision, bit for bit
        chex.assert_trees_all_equal(out[name], params[name])
    chex.assert_trees_all_equal(out["body1"]["bias"], params["body1"]["bias"])


def _pruned_dense(dtype=jnp.float32):
    w = jax.random.normal(jax.random.key(4), (16, 8)).astype(dtype)
    method = methods.prune(sparsity=0.75)
    return method.apply(method.init({"fc": {"kernel": w, "bias": jnp.ones(8, dtype)}}, KEY))


@pytest.mark.parametrize("scale", [None, "channel"])
def test_binary_keeps_the_zeros_of_a_pruned_layer_and_stores_them(scale):
    params = _pruned_dense()
    kept = np.asarray(params["fc"]["kernel"]) != 0
    method = methods.binary(scale=scale, keep_float=())
    state = method.init(params, KEY)
    kernel = np.asarray(method.apply(state)["fc"]["kernel"])
    assert np.all(kernel[~kept] == 0) and not np.any(np.signbit(kernel[~kept]))
    np.testing.assert_array_equal(np.sign(kernel[kept]),
                                  np.sign(np.asarray(params["fc"]["kernel"])[kept]))
    stored = method.store(state)
    assert type(stored["fc"]["kernel"]).__name__ == "Ternary"  # zeros need the third code
    decoded, _ = archive.decode_bytes(archive.to_bytes({"params": stored}))
    assert ztree.bit_identical(decoded["params"], jax.device_get(method.apply(state)))


@pytest.mark.parametrize("make", [lambda: methods.ternary(keep_float=()),
                                  lambda: methods.binary(keep_float=()),
                                  lambda: methods.binary(scale=None, keep_float=()),
                                  lambda: methods.pattern(),
                                  lambda: methods.share(bits=3)])
def test_bfloat16_in_bfloat16_out_through_the_file(make):
    bf16 = jnp.bfloat16
    params = {"c": {"kernel": jax.random.normal(jax.random.key(6), (3, 3, 4, 8)).astype(bf16),
                    "bias": jnp.ones(8, bf16)}}
    method = make()
    state = method.init(params, KEY)
    out = method.apply(state)
    assert {leaf.dtype for leaf in jax.tree.leaves(out)} == {jnp.dtype(bf16)}
    decoded, _ = archive.decode_bytes(archive.to_bytes({"params": method.store(state)}))
    assert decoded["params"]["c"]["kernel"].dtype == bf16
    assert ztree.bit_identical(decoded["params"], jax.device_get(out))


def test_prune_then_ttq_keeps_zeros_and_stores_them_in_under_a_bit_and_a_quarter():
    params = _lenet5_variables()["params"]
    prune = methods.prune(sparsity=0.9)
    pruned = prune.apply(prune.init(params, KEY))
    method = _bound(methods.ternary())
    state = method.init(pruned, KEY)
    kept = np.asarray(pruned["ip1"]["kernel"]) != 0
    # pruned latent weights that drift (above the threshold) stay zero
    latent = state["latent"]["params"]["ip1"]["kernel"]
    drifted = jnp.where(kept, latent, 0.5 * jnp.max(jnp.abs(latent)))
    state["latent"]["params"]["ip1"]["kernel"] = drifted
    out = method.apply(state)
    for name in state["aux"][0]:
        w = np.asarray(ztree.named_leaves(out)[name])
        m = np.asarray(ztree.named_leaves(pruned)[name]) != 0
        assert np.all(w[~m] == 0) and not np.any(np.signbit(w[~m])), name
        scales = state["latent"]["own"][0][name]
        assert set(np.unique(w)) == {0.0, float(scales["w_pos"]), -float(scales["w_neg"])}, name
    blob = archive.to_bytes({"params": method.store(state)})
    decoded, _ = archive.decode_bytes(blob)
    assert ztree.bit_identical(decoded["params"], jax.device_get(out))
    entries = {e["name"]: e for e in archive.read_header_bytes(blob)[0]["leaves"]}
    for name in state["aux"][0]:
        bits_per_weight = 8 * sum(entries[name]["bytes"]) / np.size(
            ztree.named_leaves(params)[name])
        assert entries[name]["method"] == "ternary" and bits_per_weight < 1.25, name
    for name in ("conv1/kernel", "ip2/kernel"):  # float, pruned: stored sparse
        assert entries[name]["method"] == "raw" and entries[name]["form"] == "sparse", name


def test_the_float_first_and_last_layers_stay_pruned_while_ttq_trains(fmnist_train):
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    prune = methods.prune(sparsity=0.5)
    params = prune.apply(prune.init(_lenet5_variables()["params"], KEY))
    method = _bound(methods.ternary())
    state = method.init(params, KEY)
    result = train.fit(nets.LeNet5(), method.tx(optax.adam(1e-2)), (images, labels),
                       preprocess=FMNIST, epochs=1, variables={"params": state["latent"]},
                       method=method, aux=state["aux"], progress=False)
    for name in ("conv1", "ip2"):
        before = np.asarray(params[name]["kernel"])
        after = np.asarray(result.state.params["params"][name]["kernel"])
        assert np.all(after[before == 0] == 0) and not np.array_equal(after, before), name


def test_layers_that_never_run_come_last_in_execution_order():
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


def test_nan_weights_and_settings_name_the_leaf():
    nan = {"w": {"kernel": jnp.array([[0.5, jnp.nan], [-0.5, 0.2]])}}
    for method in (methods.binary(keep_float=()), methods.ternary(keep_float=()),
                   methods.share(bits=2), methods.prune(sparsity=0.5)):
        with pytest.raises(ValueError, match="'w/kernel' holds a non-finite value"):
            method.init(nan, KEY)
    with pytest.raises(ValueError, match="bound must be positive and finite"):
        binary.clip_latent(bound=float("nan"))
    with pytest.raises(ValueError, match="holds exact zeros"):
        methods.pattern().init({"c": {"kernel": jnp.zeros((3, 3, 1, 2))}}, KEY)
