"""transforms.batchnorm: BatchNorm statistics folded into scale and bias, on a user's model."""

import flax.linen as nn
import jax
import numpy as np

from zylax import train
from zylax.transforms import batchnorm


class Folded(nn.Module):
    """Own names, no ``train`` argument, two epsilons, one BatchNorm without a scale."""

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.Conv(6, (3, 3), strides=2, use_bias=False, name="zz_conv")(x)
        x = nn.BatchNorm(use_running_average=not training, epsilon=1e-3, name="b_norm")(x)
        x = nn.relu(x)
        x = nn.Conv(4, (3, 3), strides=2, use_bias=False, name="aa_conv")(x)
        x = nn.BatchNorm(use_running_average=not training, name="a_norm")(x)  # epsilon 1e-5
        x = nn.BatchNorm(use_running_average=not training, use_scale=False, name="c_plain")(x)
        return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


def _with_statistics(fmnist_train):
    """Variables whose moving statistics come from real images (train-mode passes)."""
    model = Folded()
    images = fmnist_train[0][:256, :, :, None] / 255.0
    variables = train.init_variables(model, images[:1], 0)
    for start in range(0, 256, 64):
        _, updates = model.apply(variables, images[start:start + 64], mutable=["batch_stats"])
        variables = {**variables, **updates}
    params = jax.tree.map(lambda p: p * 1.5 + 0.1, variables["params"])  # scales away from 1
    return model, {**variables, "params": params}, images


def test_folding_keeps_the_function_and_finds_each_layers_epsilon(fmnist_train):
    model, variables, images = _with_statistics(fmnist_train)
    layers = batchnorm.batch_norm_layers(model, variables, images[:1])
    assert layers == {("b_norm",): 1e-3, ("a_norm",): 1e-5, ("c_plain",): 1e-5}
    folded = batchnorm.fold(variables, layers)
    np.testing.assert_allclose(model.apply(folded, images), model.apply(variables, images),
                               rtol=1e-5, atol=1e-5)
    stats = folded["batch_stats"]
    np.testing.assert_array_equal(stats["b_norm"]["mean"], np.zeros(6, np.float32))
    np.testing.assert_array_equal(stats["b_norm"]["var"], np.full(6, 1 - 1e-3, np.float32))
    np.testing.assert_array_equal(stats["a_norm"]["var"], np.full(4, 1 - 1e-5, np.float32))
    for name in ("c_plain",):  # no scale to hold a: left as it is
        for key in ("mean", "var"):
            np.testing.assert_array_equal(stats[name][key], variables["batch_stats"][name][key])
    np.testing.assert_array_equal(folded["params"]["zz_conv"]["kernel"],
                                  variables["params"]["zz_conv"]["kernel"])
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(folded))


def test_fold_layer_matches_the_inference_formula():
    scale, bias = np.float32([2.0, -1.0]), np.float32([0.5, 0.0])
    mean, var = np.float32([1.0, -2.0]), np.float32([3.75, 0.0])
    got = batchnorm.fold_layer(scale, bias, mean, var, 0.25)
    # a = scale / sqrt(var + 0.25) = [1, -2]; b = bias - mean * a = [-0.5, -4]
    np.testing.assert_allclose(got["scale"], [1.0, -2.0])
    np.testing.assert_allclose(got["bias"], [-0.5, -4.0])
    np.testing.assert_array_equal(got["var"], [0.75, 0.75])
    x = np.float32([4.0, 1.0])
    np.testing.assert_allclose((x - got["mean"]) / np.sqrt(got["var"] + 0.25) * got["scale"]
                               + got["bias"], (x - mean) / np.sqrt(var + 0.25) * scale + bias)
