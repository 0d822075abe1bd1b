"""``nets.Rescaled``: any model on its input resized, per-pixel outputs brought back."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import detection, nets, scenes, tasks, train
from zylax.resizing import resize_images


class Segmenter(nn.Module):  # a user's own net: unsorted names, BatchNorm, no train argument
    num_classes: int = 11

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="zz_norm")(
            nn.Conv(8, (3, 3), strides=2, name="stem")(x)))
        return nn.Conv(self.num_classes, (1, 1), name="a_labels")(x)  # at half the input size


class Classifier(nn.Module):  # takes train; global pooling makes it accept any input size
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, name="norm")(x)
        return nn.Dense(10, name="logits")(jnp.mean(nn.relu(x), axis=(1, 2)))


class IdentityNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


@pytest.fixture(scope="module")
def scene_batch(fmnist_train):
    images, targets = scenes.generate(*fmnist_train, 4, seed=5)
    return jnp.asarray(images, jnp.float32) / 255.0, {k: jnp.asarray(v) for k, v in
                                                      targets.items()}


def test_the_wrapper_has_the_wrapped_models_variables_and_loads_them(scene_batch):
    images, _ = scene_batch
    plain, wrapped = Segmenter(), nets.Rescaled(Segmenter(), 1.25)
    variables = train.init_variables(plain, images[:1], 0)
    shapes = jax.tree.map(jnp.shape, train.init_variables(wrapped, images[:1], 0))
    assert shapes == jax.tree.map(jnp.shape, variables)  # same paths, same shapes
    logits = wrapped.apply(variables, images)
    assert logits.shape == (4, 96, 96, 11)
    # the model ran at 120x120 (60x60 logits), then came back to 96x96
    inner = plain.apply(variables, resize_images(images, 1.25))
    assert inner.shape == (4, 60, 60, 11)
    np.testing.assert_allclose(logits, jax.image.resize(inner, (4, 96, 96, 11), "bilinear"),
                               atol=1e-5)


def test_per_pixel_outputs_come_back_aligned_with_the_input():
    # bilinear resizing (half-pixel centres) keeps a linear ramp linear away from the edges:
    # up and back down gives it back there (to 0.002), where a one-pixel shift (0.037) or a
    # flip would not
    rows, cols = jnp.meshgrid(jnp.arange(28.0), jnp.arange(28.0), indexing="ij")
    ramp = jnp.stack([rows / 27, 0.3 * cols / 27], -1)[None]  # (1, 28, 28, 2)
    for scale in (2.0, 1.5):
        back = nets.Rescaled(IdentityNet(), scale).apply({}, ramp)
        assert back.shape == ramp.shape
        np.testing.assert_allclose(back[:, 4:-4, 4:-4], ramp[:, 4:-4, 4:-4], atol=2e-3)


def test_a_model_without_train_updates_its_batch_statistics_through_the_wrapper(scene_batch):
    images, targets = scene_batch
    model = nets.Rescaled(Segmenter(), 1.25)
    assert train.mode_kwargs(model, True) == {"train": True}
    state = train.create_state(model, optax.adam(1e-2), np.asarray(images[:1]))
    step = train.make_train_step(model, optax.adam(1e-2), loss=detection.pixel_cross_entropy)
    batch = {"image": images, "label": targets, "mask": jnp.ones(4)}
    after, first = step(state, batch)
    _, second = step(after, batch)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.collections,
                         after.collections)
    assert min(jax.tree.leaves(moved)) > 0  # BatchNorm statistics were updated in training
    assert second["loss"] < first["loss"]


def test_train_is_passed_on_to_a_model_that_takes_it(fmnist_test):
    images = jnp.asarray(fmnist_test[0][:8].reshape(8, 28, 28, 1), jnp.float32) / 255.0
    model = nets.Rescaled(Classifier(), 0.5)  # class logits are returned as they are
    variables = train.init_variables(model, images[:1], 0)
    logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    assert logits.shape == (8, 10)
    assert not jnp.allclose(updates["batch_stats"]["norm"]["mean"],
                            variables["batch_stats"]["norm"]["mean"])
    np.testing.assert_allclose(model.apply(variables, images),
                               Classifier().apply(variables, resize_images(images, 0.5)),
                               atol=1e-6)


def test_a_wrapped_detector_gets_the_anchors_of_the_size_it_runs_at():
    ssd = nets.SSDLiteSmall(num_classes=11)
    wrapped = nets.Rescaled(ssd, 1.25)
    np.testing.assert_array_equal(wrapped.anchors(96), ssd.anchors(120))
    np.testing.assert_array_equal(wrapped.anchors((96, 96)), ssd.anchors((120, 120)))
    x = jnp.zeros((1, 96, 96, 1))
    logits, boxes = jax.eval_shape(lambda: wrapped.apply(wrapped.init(jax.random.key(0), x), x))
    assert logits.shape == (1, len(wrapped.anchors(96)), 12)  # 11 classes + background
    assert boxes.shape == (1, len(wrapped.anchors(96)), 4)
    assert isinstance(tasks.for_model(wrapped, (96, 96, 1)), tasks.Detection)
    assert isinstance(tasks.for_model(nets.Rescaled(Classifier(), 2), (28, 28, 1)),
                      tasks.Classification)
    assert nets.Rescaled(Segmenter(7), 2).num_classes == 7


@pytest.mark.parametrize("scale,message", [
    (0, r"scale must be a number in \[0.1, 8\], got 0"),
    (9.5, r"got 9.5"),
    ("2", r"got '2'"),
    (True, r"got True"),
    (float("nan"), r"got nan"),
])
def test_bad_scales_are_refused_in_one_line(scale, message):
    with pytest.raises(ValueError, match=message):
        nets.Rescaled(Segmenter(), scale)


def test_multi_scale_inference_of_the_plain_model_equals_the_wrapper(scene_batch):
    images, _ = scene_batch
    plain = Segmenter()
    variables = train.init_variables(plain, images[:1], 0)
    views = tasks.multi_scale_log_probabilities(lambda x: plain.apply(variables, x), images,
                                                (1.25,))
    wrapped = nets.Rescaled(plain, 1.25).apply(variables, images)
    np.testing.assert_allclose(jnp.exp(views), jax.nn.softmax(wrapped), atol=1e-6)
