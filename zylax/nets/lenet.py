"""The two reference networks of Deep Compression (Han et al. 2015, Table 1).

Both take NHWC float input ``(N, 28, 28, 1)`` and return logits ``(N, num_classes)``.
Layer names follow the Caffe prototxts (``ip1``, ``conv1``, ...), so Han's
per-layer tables map one to one onto the parameter tree.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]


class LeNet300100(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU (266,610 parameters).

    ``activation`` is applied to both hidden layers (e.g. a binarizing
    activation for a BNN); ``dense`` can be swapped for a quantized layer.
    """

    num_classes: int = 10
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    dense: ModuleDef = nn.Dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or BatchNorm
        x = x.reshape((x.shape[0], -1))
        x = self.activation(self.dense(300, name="ip1")(x))
        x = self.activation(self.dense(100, name="ip2")(x))
        return self.dense(self.num_classes, name="ip3")(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5 as used by Han et al. (431,080 parameters).

    conv1 20@5x5 valid -> maxpool 2/2 -> conv2 50@5x5 valid -> maxpool 2/2 ->
    ip1 500 + ReLU -> ip2 num_classes. As in Caffe, the convolutions have no
    nonlinearity of their own.
    """

    num_classes: int = 10
    conv: ModuleDef = nn.Conv
    dense: ModuleDef = nn.Dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = self.conv(20, (5, 5), padding="VALID", name="conv1")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = self.conv(50, (5, 5), padding="VALID", name="conv2")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(self.dense(500, name="ip1")(x))
        return self.dense(self.num_classes, name="ip2")(x)


def param_count(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
