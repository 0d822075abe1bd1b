"""SSDLite and DeepLabV3 on MobileNet V2: paper sizes, taps, dilation, one training step, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import detection, nets, scenes
from zylax.nets.layers import TapConv
from zylax.nets.mobilenet import V2_SETTINGS, v2_blocks

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""One training step runs once: compiling it quickly matters more than running it fast."""


def _rows(summary):
    return {row.name: row for row in summary.layers}


def test_ssdlite_320_matches_the_paper_size_and_tf_taps():
    s = nets.summary(nets.SSDLite(num_classes=80), (320, 320, 3), print_table=False)
    assert (s.params, s.macs) == (4_337_013, 788_830_144)
    assert abs(s.params / 4.3e6 - 1) < 0.01 and abs(s.macs / 0.8e9 - 1) < 0.02  # Table 6
    rows = _rows(s)
    # taps: the 13th bottleneck's expansion (576 ch, stride 16) and the last conv (1280, 32)
    assert rows["predictor0/classifier_depthwise"].output_shape == (1, 20, 20, 576)
    assert rows["predictor1/classifier_depthwise"].output_shape == (1, 10, 10, 1280)
    assert [rows[f"extra{i}/pointwise"].output_shape[1:] for i in range(4)] == [
        (5, 5, 512), (3, 3, 256), (2, 2, 256), (1, 1, 128)]
    assert rows["extra0/reduce"].output_shape[-1] == 256
    # 3 anchors a location on the first map, 6 elsewhere; 81 outputs with the background
    assert rows["predictor0/classifier"].output_shape[-1] == 3 * 81
    assert rows["predictor5/box"].output_shape[-1] == 6 * 4


def test_ssdlite_outputs_line_up_with_its_anchors():
    model = nets.SSDLite(num_classes=80)
    x = jax.ShapeDtypeStruct((2, 320, 320, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 320, 320, 3))))
    logits, deltas = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert logits.shape == (2, 2034, 81) and deltas.shape == (2, 2034, 4)
    assert model.feature_map_sizes(320) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.anchors(320).shape == (2034, 4)
    assert model.anchors(300).shape == (1917, 4)  # TF's ssd_mobilenet_v2 at 300x300


def test_deeplab_matches_the_paper_size():
    model = nets.DeepLabV3(num_classes=21)
    at_512 = nets.summary(model, (512, 512, 3), print_table=False)
    assert at_512.params == 2_113_557 and abs(at_512.params / 2.11e6 - 1) < 0.01
    assert at_512.macs == 2_603_958_272
    # DeepLab evaluates VOC on 513x513 crops: that reproduces the 2.75B multiply-adds
    at_513 = nets.summary(model, (513, 513, 3), print_table=False)
    assert abs(at_513.macs / 2.75e9 - 1) < 0.005
    rows = _rows(at_512)
    assert "last" not in rows  # the head reads the 320-channel map, no 1280 conv
    assert rows["block16/project"].output_shape == (1, 32, 32, 320)  # output stride 16
    assert rows["aspp0"].output_shape == (1, 32, 32, 256)
    assert rows["classifier"].output_shape == (1, 32, 32, 21)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    x = jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.float32)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 512, 512, 21)


def test_output_stride_dilates_instead_of_striding_as_tf_slim():
    def strides_and_rates(output_stride):
        blocks = v2_blocks(V2_SETTINGS, 1.0, output_stride=output_stride)
        return [(stride, rate) for _, stride, _, rate in blocks]

    reference = strides_and_rates(None)
    assert [i for i, (s, _) in enumerate(reference) if s == 2] == [1, 3, 6, 13]
    os16 = strides_and_rates(16)
    assert os16[:13] == reference[:13]
    assert os16[13:] == [(1, 1), (1, 2), (1, 2), (1, 2)]
    os8 = strides_and_rates(8)
    assert os8[:6] == reference[:6]
    assert os8[6:] == [(1, 1)] + [(1, 2)] * 6 + [(1, 2), (1, 4), (1, 4), (1, 4)]
    s = nets.summary(nets.DeepLabV3(num_classes=21, output_stride=8), (64, 64, 3),
                     print_table=False)
    assert _rows(s)["block16/project"].output_shape == (1, 8, 8, 320)



def test_a_deeplab_trained_at_output_stride_16_loads_into_the_registered_output_stride_8_net():
    # experiments/deeplab_os16.py trains at OS 16 and fine-tunes at 8 (RESULTS.md): the two
    # differ only in dilation, so every variable has the same path and shape
    from experiments.deeplab_os16 import segmenter

    x = jnp.zeros((1, 96, 96, 1))
    os16 = jax.eval_shape(lambda: segmenter(11).init(jax.random.key(0), x))
    os8 = jax.eval_shape(lambda: nets.DeepLabV3Small(11).init(jax.random.key(0), x))
    assert segmenter(11).output_stride == 16
    assert jax.tree.structure(os16) == jax.tree.structure(os8)
    assert jax.tree.map(lambda a: a.shape, os16) == jax.tree.map(lambda a: a.shape, os8)
    logits = jax.eval_shape(lambda v: segmenter(11).apply(v, x), os16)
    assert logits.shape == (1, 96, 96, 11)

@pytest.mark.parametrize("kwargs", [
    dict(features=16, kernel_size=(3, 3), feature_group_count=16, kernel_dilation=(2, 2),
         padding=((2, 2), (2, 2)), use_bias=False),
    dict(features=16, kernel_size=(3, 3), feature_group_count=16, kernel_dilation=4,
         padding="SAME"),
    dict(features=32, kernel_size=(3, 3), feature_group_count=4, kernel_dilation=2, strides=2,
         padding="VALID")])
def test_dilated_tapconv_equals_flax_conv(kwargs):
    x = jax.random.normal(jax.random.key(0), (2, 11, 10, 16))
    reference, tap = nn.Conv(**kwargs), TapConv(**kwargs)
    variables = jax.jit(reference.init)(jax.random.key(1), x)
    np.testing.assert_allclose(jax.jit(tap.apply)(variables, x),
                               jax.jit(reference.apply)(variables, x), atol=1e-5)


def test_small_configurations():
    ssd = nets.SSDLiteSmall(num_classes=10)
    s = nets.summary(ssd, (96, 96, 1), print_table=False)
    assert (s.params, s.macs) == (524_596, 12_506_544)
    rows = _rows(s)
    assert rows["predictor0/classifier_depthwise"].output_shape == (1, 12, 12, 96)  # block 6
    assert rows["predictor1/classifier_depthwise"].output_shape == (1, 6, 6, 192)  # block 13
    assert rows["predictor2/classifier_depthwise"].output_shape == (1, 3, 3, 1280)
    assert ssd.feature_map_sizes(96) == [(12, 12), (6, 6), (3, 3)]
    assert ssd.anchors(96).shape == (756, 4)
    odd = jnp.zeros((1, 97, 97, 1))  # odd sizes round up at every stride-2 layer
    logits, _ = jax.eval_shape(lambda: ssd.apply(ssd.init(jax.random.key(0), odd), odd))
    assert ssd.feature_map_sizes(97) == [(13, 13), (7, 7), (4, 4)]
    assert logits.shape == (1, ssd.anchors(97).shape[0], 11)
    deeplab = nets.summary(nets.DeepLabV3Small(num_classes=11), (96, 96, 1), print_table=False)
    assert (deeplab.params, deeplab.macs) == (313_547, 44_094_464)
    assert _rows(deeplab)["classifier"].output_shape == (1, 12, 12, 11)
    # the same net on scenes resized to 120x120 inside: the same parameters, a 15x15 grid
    # and 1.25^2 times the MACs of every conv, the logits still at 96x96
    wider = nets.summary(nets.Rescaled(nets.DeepLabV3Small(num_classes=11), 1.25),
                         (96, 96, 1), print_table=False)
    assert (wider.params, wider.macs) == (313_547, 68_889_536)
    assert _rows(wider)["classifier"].output_shape == (1, 15, 15, 11)


@pytest.fixture(scope="module")
def scene_batch(fmnist_train):
    images, targets = scenes.generate(*fmnist_train, 8, seed=3)
    return jnp.asarray(images, jnp.float32) / 255.0, {k: jnp.asarray(v) for k, v in
                                                      targets.items()}


def _numpy_variables(model, images):
    """Variables of ``model.init``'s shapes: lecun-normal kernels, zero biases, identity BN.

    Drawn with numpy because compiling ``model.init`` (about a hundred
    truncated-normal initializers) costs more than the training step itself
    on the 2-core CI machine.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), images[:1])
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = np.prod(leaf.shape[:-1])
            return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _losses_around_one_step(model, loss, images, targets):
    """Train-mode losses before and after one jitted Adam step.

    ``nn.Conv`` compiles faster than ``TapConv``, which only pays off over many steps.
    """
    tx = optax.adam(1e-3)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(params, opt_state, batch_stats):
        def loss_of(params):
            outputs, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                           images, train=True, mutable=["batch_stats"],
                                           rngs={"dropout": jax.random.key(1)})
            return loss(outputs, targets, jnp.ones(images.shape[0]))[0], updates

        (value, updates), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        changes, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state, updates["batch_stats"], value

    variables = _numpy_variables(model, images)
    params, stats = variables["params"], variables["batch_stats"]
    new_params, opt_state, new_stats, before = step(params, tx.init(params), stats)
    *_, after = step(new_params, opt_state, stats)  # the loss at the updated parameters
    assert all(np.any(a != b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_stats)))
    return float(before), float(after)


def test_one_training_step_of_small_ssdlite_lowers_the_loss_on_real_scenes(scene_batch):
    model = nets.SSDLiteSmall(num_classes=10)
    loss = functools.partial(detection.multibox_loss, anchors=jnp.asarray(model.anchors(96)),
                             image_size=96)
    before, after = _losses_around_one_step(model, loss, *scene_batch)
    assert after < before


def test_one_training_step_of_small_deeplab_lowers_the_loss_on_real_scenes(scene_batch):
    model = nets.DeepLabV3Small(num_classes=11)
    before, after = _losses_around_one_step(model, detection.pixel_cross_entropy, *scene_batch)
    assert after < before


@pytest.mark.parametrize("make,message", [
    (lambda: nets.DeepLabV3(num_classes=21, output_stride=32), "must be 8 or 16, got 32"),
    (lambda: nets.DeepLabV3(num_classes=1), "at least 2, got 1"),
    (lambda: nets.SSDLite(num_classes=0), "at least 1, got 0"),
    (lambda: v2_blocks(V2_SETTINGS, 1.0, output_stride=64), "output_stride 64 is not reached"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
