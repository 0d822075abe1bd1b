"""MobileNet V1 (Howard et al. 2017) and V2 (Sandler et al. 2018).

V1 follows Keras applications (``keras_applications/mobilenet.py``): a 3x3/2
stem and 13 depthwise-separable blocks (28 conv layers counting depthwise and
pointwise separately), convs without bias, BatchNorm (eps 1e-3) + ReLU6, and
stride-2 convs padded ``((0, 1), (0, 1))`` then 'valid'. Width multiplier
``alpha`` gives ``int(filters * alpha)`` channels (floor, no divisor); the
resolution multiplier is simply the input size. Head: global average pool,
dropout (1e-3), 1x1 conv with bias to the classes.

V2 follows torchvision (``mobilenetv2.py``): a 3x3/2 stem, 17 inverted
residual blocks from the (t, c, n, s) table, a 1x1 conv to ``last_channel``,
global average pool, dropout 0.2 and a dense classifier. Channels are rounded
by ``make_divisible(c * width, 8)``, the hidden width of a block is
``round(in * t)``, the last conv has ``make_divisible(1280 * max(1, width), 8)``
channels (the paper keeps 1280 for width < 1), and the residual exists only
for stride 1 with equal input and output channels.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
"""(pointwise filters, depthwise stride) of the 13 blocks of MobileNet V1 (paper Table 1)."""

V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
"""(expansion t, channels c, repeats n, first stride s) of MobileNet V2 (paper Table 2)."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never below 90%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _check_width(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_stem_stride(stride: int) -> None:
    """Raises unless ``stride`` is 1 (the 32x32 adaptation) or 2 (the reference stem)."""
    if stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stride!r}")


class MobileNetV1(nn.Module):
    """MobileNet V1 with width multiplier ``alpha``; any input size >= 32.

    ``stem_stride=1`` (instead of the reference 2) is the usual adaptation to
    32x32 images: same parameters, the body sees the input at twice the
    resolution (4x the multiply-adds), as if fed 64x64.
    """

    alpha: float = 1.0
    num_classes: int = 1000
    dropout_rate: float = 1e-3
    stem_stride: int = 2
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_width("alpha", self.alpha)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.99,
                                 epsilon=1e-3)
        conv = functools.partial(self.conv, use_bias=False)

        def strided_padding(stride):
            return ((0, 1), (0, 1)) if stride == 2 else "SAME"

        check_stem_stride(self.stem_stride)
        x = conv(int(32 * self.alpha), (3, 3), strides=(self.stem_stride, self.stem_stride),
                 padding=strided_padding(self.stem_stride), name="conv1")(x)
        x = nn.relu6(norm(name="conv1_bn")(x))
        for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
            channels = x.shape[-1]
            x = conv(channels, (3, 3), strides=(stride, stride), padding=strided_padding(stride),
                     feature_group_count=channels, name=f"conv_dw_{i}")(x)
            x = nn.relu6(norm(name=f"conv_dw_{i}_bn")(x))
            x = conv(int(filters * self.alpha), (1, 1), name=f"conv_pw_{i}")(x)
            x = nn.relu6(norm(name=f"conv_pw_{i}_bn")(x))
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = self.conv(self.num_classes, (1, 1), name="conv_preds")(x)
        return x.reshape((x.shape[0], -1))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise -> 1x1 linear projection."""

    features: int
    stride: int
    expansion: int
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5)
        conv = functools.partial(self.conv, use_bias=False)
        inputs = x
        hidden = int(round(x.shape[-1] * self.expansion))
        if self.expansion != 1:
            x = nn.relu6(norm(name="expand_bn")(conv(hidden, (1, 1), name="expand")(x)))
        x = conv(hidden, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
                 feature_group_count=hidden, name="depthwise")(x)
        x = nn.relu6(norm(name="depthwise_bn")(x))
        x = norm(name="project_bn")(conv(self.features, (1, 1), name="project")(x))
        if self.stride == 1 and inputs.shape[-1] == self.features:
            x = x + inputs
        return x


class MobileNetV2(nn.Module):
    """MobileNet V2 with ``width_multiplier``; any input size >= 32.

    ``stem_stride=1`` is the 32x32 adaptation described in ``MobileNetV1``.
    """

    width_multiplier: float = 1.0
    num_classes: int = 1000
    dropout_rate: float = 0.2
    stem_stride: int = 2
    settings: Sequence[tuple[int, int, int, int]] = tuple(V2_SETTINGS)
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_width("width_multiplier", self.width_multiplier)
        width = self.width_multiplier
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5)
        check_stem_stride(self.stem_stride)
        x = self.conv(make_divisible(32 * width), (3, 3), strides=(self.stem_stride,) * 2,
                      padding=((1, 1), (1, 1)), use_bias=False, name="stem")(x)
        x = nn.relu6(norm(name="stem_bn")(x))
        block = 0
        for t, c, n, s in self.settings:
            for i in range(n):
                x = InvertedResidual(make_divisible(c * width), s if i == 0 else 1, t,
                                     conv=self.conv, name=f"block{block}")(x, train)
                block += 1
        last = make_divisible(1280 * max(1.0, width))
        x = self.conv(last, (1, 1), use_bias=False, name="last")(x)
        x = nn.relu6(norm(name="last_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier")(x)
