"""SqueezeNet 1.0 / 1.1 (Iandola et al. 2016) as in torchvision, with the paper's bypasses.

Fire module: squeeze 1x1 conv + ReLU, then expand 1x1 and expand 3x3 (pad 1)
convs, each + ReLU, concatenated on channels. All convs have biases; there is
no BatchNorm. Max pooling is 3x3 stride 2 in ceil mode (Caffe's rounding).

Bypass (paper section 6): ``"simple"`` adds the input of fire3, fire5, fire7
and fire9 to their output (equal channel counts, no parameters);
``"complex"`` also bypasses fire2, fire4, fire6 and fire8 through a 1x1 conv
(with bias) to the changed channel count.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

# (squeeze, expand1x1, expand3x3) of fire2..fire9, identical in both versions.
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
# Fire modules after which a 3x3/2 max pool sits.
POOL_AFTER = {"1_0": {4, 8}, "1_1": {3, 5}}
STEM = {"1_0": (96, (7, 7)), "1_1": (64, (3, 3))}
VERSIONS = tuple(STEM)
BYPASSES = (None, "simple", "complex")


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """Max pooling with ceil-mode output size (as torch ``ceil_mode=True``)."""
    pads = []
    for size in x.shape[1:3]:
        out = math.ceil((size - window) / stride) + 1
        if (out - 1) * stride >= size:  # torch: the last window must start inside the input
            out -= 1
        pads.append((0, max((out - 1) * stride + window - size, 0)))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


class Fire(nn.Module):
    """Fire module: squeeze 1x1 -> [expand 1x1, expand 3x3] concatenated."""

    squeeze: int
    expand1x1: int
    expand3x3: int
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = nn.relu(self.conv(self.squeeze, (1, 1), name="squeeze")(x))
        e1 = nn.relu(self.conv(self.expand1x1, (1, 1), name="expand1x1")(s))
        e3 = nn.relu(self.conv(self.expand3x3, (3, 3), padding=((1, 1), (1, 1)),
                               name="expand3x3")(s))
        return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet(nn.Module):
    """SqueezeNet ``version`` "1_0" or "1_1", ``bypass`` None, "simple" or "complex".

    Input NHWC (N, H, W, C); output logits (N, num_classes). Dropout 0.5 before
    conv10 is active only with ``train=True`` (PRNG stream "dropout").

    ``head_bias_init`` is conv10's initial bias (torchvision: 0). The logits
    pass a ReLU; on small inputs (32x32 ends at a 1x1 map) a class whose
    pre-activation turns negative on every image gets no gradient again. On
    Fashion-MNIST with 0 the trouser class died in every run (test accuracy
    stuck at 45-75%); starting at 1.0 kept all classes alive (RESULTS.md).
    """

    version: str = "1_1"
    bypass: str | None = None
    num_classes: int = 1000
    dropout_rate: float = 0.5
    head_bias_init: float = 0.0
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown SqueezeNet version {self.version!r}; choose {VERSIONS}")
        if self.bypass not in BYPASSES:
            raise ValueError(f"unknown bypass {self.bypass!r}; choose one of {BYPASSES}")
        # torchvision: Kaiming-uniform convs, N(0, 0.01) for conv10, zero biases
        conv = functools.partial(self.conv, kernel_init=nn.initializers.kaiming_uniform())
        features, kernel = STEM[self.version]
        x = nn.relu(conv(features, kernel, strides=(2, 2), padding="VALID", name="conv1")(x))
        x = max_pool_ceil(x)
        for number, (squeeze, e1, e3) in enumerate(FIRES, start=2):
            y = Fire(squeeze, e1, e3, conv=conv, name=f"fire{number}")(x)
            if self.bypass is not None and number % 2 == 1:
                y = y + x
            elif self.bypass == "complex":
                y = y + conv(e1 + e3, (1, 1), name=f"bypass{number}")(x)
            x = y
            if number in POOL_AFTER[self.version]:
                x = max_pool_ceil(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.relu(self.conv(self.num_classes, (1, 1), name="conv10",
                              kernel_init=nn.initializers.normal(0.01),
                              bias_init=nn.initializers.constant(self.head_bias_init))(x))
        return jnp.mean(x, axis=(1, 2))


SqueezeNet1_0 = functools.partial(SqueezeNet, version="1_0")
SqueezeNet1_1 = functools.partial(SqueezeNet, version="1_1")
