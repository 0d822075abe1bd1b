import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import data, nets, registry, train

REFERENCE_PARAMS = {  # torchvision (SqueezeNet, MobileNet V2) and Keras trainable (MobileNet V1)
    "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496,
    "mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872,
}
PAPER_NETS = {  # the width-1.0 nets of the papers (the registry's MobileNets are width 0.5)
    "squeezenet1_0": nets.SqueezeNet1_0, "squeezenet1_1": nets.SqueezeNet1_1,
    "mobilenet_v1": nets.MobileNetV1, "mobilenet_v2": nets.MobileNetV2,
}


@pytest.mark.parametrize("name,count", sorted(REFERENCE_PARAMS.items()))
def test_parameter_counts_match_references(name, count):
    model = PAPER_NETS[name](num_classes=1000)
    assert nets.summary(model, (224, 224, 3), print_table=False).params == count


def test_sepnet_is_about_1_3m_parameters():
    params = nets.summary(nets.SEPNet(), (224, 224, 3), print_table=False).params
    assert 1.2e6 <= params <= 1.4e6


@pytest.mark.parametrize("alpha,size,macs", [(1.0, 224, 569), (0.75, 224, 325), (0.5, 224, 149),
                                             (0.25, 224, 41), (1.0, 192, 418), (1.0, 160, 290),
                                             (1.0, 128, 186)])
def test_mobilenet_v1_macs_match_paper_tables(alpha, size, macs):
    s = nets.summary(nets.MobileNetV1(alpha=alpha), (size, size, 3), print_table=False)
    assert abs(s.macs / 1e6 - macs) / macs < 0.01


def test_mobilenet_v2_and_squeezenet_macs():
    assert abs(nets.summary(nets.MobileNetV2(), (224, 224, 3), print_table=False).macs / 300e6
               - 1) < 0.01
    # torchvision's "GFLOPS" (_ops) are MAC counts: 0.819 and 0.349
    assert abs(nets.summary(nets.SqueezeNet1_0(), (224, 224, 3), print_table=False).macs / 1e9
               - 0.819) < 0.001
    assert abs(nets.summary(nets.SqueezeNet1_1(), (224, 224, 3), print_table=False).macs / 1e9
               - 0.349) < 0.001


def test_width_multiplier_rounding_rules():
    assert [nets.make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24 * 0.35, 320 * 0.35)] == \
        [16, 8, 8, 112]
    assert nets.make_divisible(1280 * 1.4) == 1792
    v2 = nets.summary(nets.MobileNetV2(width_multiplier=0.5), (64, 64, 3), print_table=False)
    layers = {r.name: r for r in v2.layers}
    assert layers["stem"].output_shape[-1] == 16  # make_divisible(32 * 0.5)
    assert layers["last"].output_shape[-1] == 1280  # not shrunk below 1
    assert layers["block1/expand"].output_shape[-1] == 6 * 8  # hidden = round(in * t)
    v1 = nets.summary(nets.MobileNetV1(alpha=0.75), (64, 64, 3), print_table=False)
    assert {r.name: r for r in v1.layers}["conv_pw_13"].output_shape[-1] == 768  # int(1024*.75)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1", "mobilenet_v1", "mobilenet_v2",
                                  "sepnet"])
@pytest.mark.parametrize("size,classes", [(32, 10), (224, 1000), (96, 7)])
def test_output_shapes(name, size, classes):
    model = registry.get(name).factory(classes)
    x = jnp.zeros((2, size, size, 3))
    out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x))
    assert out.shape == (2, classes)


def _random_variables(model, x, seed=0):
    """``model.init``'s variables, shaped by ``jax.eval_shape`` and filled with seeded normal
    values (variances positive): no initialiser compiled op by op."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        values = (0.5 * rng.normal(size=leaf.shape)).astype(leaf.dtype)
        return np.abs(values) + 0.5 if jax.tree_util.keystr(path).endswith("['var']") else values
    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def _intercept_outputs(module_type, model, variables, x):
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, module_type) and context.method_name == "__call__":
            seen.append(("/".join(context.module.path), args[0], out))
        return out
    with nn.intercept_methods(interceptor):
        model.apply(variables, x)
    return seen


def test_mobilenet_v2_residuals_exactly_where_torchvision_has_them():
    model = nets.MobileNetV2(num_classes=10)
    x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
    variables = _random_variables(model, x)
    # zero every projection BN: a block's output is then its input (residual) or zero
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if "project_bn" in jax.tree_util.keystr(p) else v,
        variables["params"])
    seen = _intercept_outputs(nets.mobilenet.InvertedResidual, model,
                              {**variables, "params": params}, x)
    residual = [int(name.removeprefix("block")) for name, inp, out in seen
                if inp.shape == out.shape and np.allclose(inp, out)]
    assert all(np.all(np.asarray(out) == 0) for name, _, out in seen
               if int(name.removeprefix("block")) not in residual)
    assert residual == [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]


@pytest.mark.parametrize("bypass,expected", [(None, []), ("simple", [3, 5, 7, 9]),
                                             ("complex", [2, 3, 4, 5, 6, 7, 8, 9])])
def test_squeezenet_bypass_positions(bypass, expected):
    model = nets.SqueezeNet(bypass=bypass, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
    params = _random_variables(model, x)["params"]
    bypassed = []
    for k in range(2, 10):
        # zero fire k's expand convs: it emits zeros, so whatever reaches the next
        # layer (after pooling, if any) came through a bypass
        zeroed = jax.tree_util.tree_map_with_path(
            lambda p, v: jnp.zeros_like(v) if f"fire{k}']['expand" in jax.tree_util.keystr(p)
            else v, params)
        inputs = {name: inp for name, inp, _ in _intercept_outputs(nn.Module, model,
                                                                   {"params": zeroed}, x)}
        following = inputs[f"fire{k + 1}"] if k < 9 else inputs["conv10"]
        if np.any(np.asarray(following) != 0):
            bypassed.append(k)
    assert bypassed == expected


def test_bad_arguments():
    x = jnp.zeros((1, 32, 32, 3))
    for model, message in [(nets.MobileNetV1(alpha=0.0), "alpha must be positive"),
                           (nets.MobileNetV2(width_multiplier=-1.0), "width_multiplier must be"),
                           (nets.SqueezeNet(version="2_0"), "unknown SqueezeNet version"),
                           (nets.SqueezeNet(bypass="dense"), "unknown bypass"),
                           (nets.SEPNet(groups=3), "groups must be"),
                           (nets.MobileNetV1(stem_stride=4), "stem_stride must be 1 or 2"),
                           (nets.MobileNetV2(stem_stride=0), "stem_stride must be 1 or 2"),
                           (nets.SEPNet(stem_stride=3), "stem_stride must be 1 or 2")]:
        with pytest.raises(ValueError, match=message):
            model.init(jax.random.key(0), x)


def test_summary_counts_tapconv_layers_once():
    from zylax.nets.layers import TapConv

    for make in (lambda **kw: nets.MobileNetV2(width_multiplier=0.5, num_classes=10, **kw),
                 lambda **kw: nets.SEPNet(num_classes=10, **kw)):
        plain = nets.summary(make(), (32, 32, 1), print_table=False)
        tap = nets.summary(make(conv=TapConv), (32, 32, 1), print_table=False)
        assert (tap.params, tap.macs, len(tap.layers)) == (plain.params, plain.macs,
                                                          len(plain.layers))


@pytest.mark.parametrize("make", [functools.partial(nets.MobileNetV1, alpha=0.5),
                                  functools.partial(nets.MobileNetV2, width_multiplier=0.5),
                                  nets.SEPNet])
def test_stem_stride_1_at_32_is_the_reference_net_at_64(make):
    small = nets.summary(make(num_classes=10, stem_stride=1), (32, 32, 1), print_table=False)
    reference = nets.summary(make(num_classes=10), (64, 64, 1), print_table=False)
    assert small.params == reference.params
    assert small.macs == reference.macs
    assert [r.output_shape for r in small.layers] == [r.output_shape for r in reference.layers]
    assert small.layers[-1].output_shape[-1] == 10


def test_every_sepnet_kxk_kernel_has_a_float_1x1_partner():
    x = jnp.zeros((1, 32, 32, 1))
    params = jax.eval_shape(nets.SEPNet(num_classes=10).init, jax.random.key(0), x)["params"]
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
    kxk = [name for name, v in flat.items() if v.ndim == 4 and v.shape[:2] != (1, 1)]
    assert len(kxk) == 15  # stem, 4 stride-2 layers, 2 PRBs in each of 5 SEP modules
    for name in kxk:
        assert name.endswith("['pattern']['kernel']"), name
        partner = flat[name.replace("['pattern']", "['pointwise']")]
        assert partner.shape[:2] == (1, 1) and partner.shape[2:] == flat[name].shape[2:]


def test_squeezenet_head_bias_init():
    x = jnp.zeros((1, 32, 32, 1))
    reference = nets.SqueezeNet1_1(num_classes=10).init(jax.random.key(0), x)["params"]
    registered = registry.get("squeezenet1_1").factory(10).init(jax.random.key(0), x)["params"]
    np.testing.assert_array_equal(reference["conv10"]["bias"], np.zeros(10))  # torchvision
    np.testing.assert_array_equal(registered["conv10"]["bias"], np.ones(10))
    np.testing.assert_array_equal(reference["conv10"]["kernel"], registered["conv10"]["kernel"])


SMALL_NETS = {
    "squeezenet1_1": functools.partial(nets.SqueezeNet1_1, num_classes=10),
    "mobilenet_v1": functools.partial(nets.MobileNetV1, alpha=0.25, num_classes=10),
    "mobilenet_v2": functools.partial(nets.MobileNetV2, width_multiplier=0.35, num_classes=10),
    "sepnet": functools.partial(nets.SEPNet, num_classes=10),
}


@pytest.fixture(scope="module")
def real_batch(fmnist_train):
    images, labels = fmnist_train[0][:64], fmnist_train[1][:64]
    return next(data.batches(images, labels, 64, preprocess=data.preprocessing("fashion_mnist", 32),
                             shuffle=False))


@pytest.mark.parametrize("name", sorted(SMALL_NETS))
def test_one_jitted_step_lowers_loss_and_bn_stats_move_only_in_training(name, real_batch):
    model = SMALL_NETS[name]()
    tx = optax.adam(1e-3)
    mesh = train.data_mesh()
    # on the mesh from the start, as train.fit puts it: the step's outputs then have the
    # types of its inputs, and the second step reuses the first one's compiled program
    state = train.replicate(train.create_state(model, tx, real_batch["image"][:1]), mesh)
    step = train.make_train_step(model, tx, mesh=mesh)
    evaluate = train.make_eval_step(model, mesh=mesh)
    batch = train.shard_batch(real_batch, mesh)
    before = state.collections.get("batch_stats")
    # deterministic loss (eval mode, running statistics) before and after training steps
    initial_loss, _, _ = evaluate(state.params, state.collections, None, batch)
    for _ in range(6):
        state, _ = step(state, batch)
    final_loss, _, _ = evaluate(state.params, state.collections, None, batch)
    assert float(final_loss) < float(initial_loss)
    if before:  # BatchNorm nets: running statistics moved in training...
        after = state.collections["batch_stats"]
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                            jax.tree.leaves(after)))
        _, updates = jax.jit(functools.partial(model.apply, train=False,
                                               mutable=["batch_stats"]))(state.variables,
                                                                         batch["image"])
        # ...and stay put in evaluation
        for a, b in zip(jax.tree.leaves(updates["batch_stats"]), jax.tree.leaves(after)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [
    dict(features=16, kernel_size=(3, 3), feature_group_count=16, strides=(2, 2),
         padding=((0, 1), (0, 1)), use_bias=False),
    dict(features=16, kernel_size=(3, 3), feature_group_count=16, padding="SAME"),
    dict(features=32, kernel_size=(3, 3), feature_group_count=4, strides=2,
         padding=((1, 1), (1, 1))),
    dict(features=8, kernel_size=(1, 1), feature_group_count=4, padding="VALID")])
def test_tapconv_equals_flax_conv_forward_and_gradient(kwargs):
    from zylax.nets.layers import TapConv
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 16))
    reference, tap = nn.Conv(**kwargs), TapConv(**kwargs)
    variables = reference.init(jax.random.key(1), x)
    assert jax.tree.structure(variables) == jax.tree.structure(tap.init(jax.random.key(1), x))
    np.testing.assert_allclose(tap.apply(variables, x), reference.apply(variables, x), atol=1e-5)
    loss = lambda module: lambda v: jnp.sum(jnp.sin(module.apply(v, x)))  # noqa: E731
    for a, b in zip(jax.tree.leaves(jax.grad(loss(tap))(variables)),
                    jax.tree.leaves(jax.grad(loss(reference))(variables))):
        np.testing.assert_allclose(a, b, atol=1e-4)
