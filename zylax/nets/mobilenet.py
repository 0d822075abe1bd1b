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
for stride 1 with equal input and output channels. ``v2_trunk`` builds the
same layers for the dense heads (``ssdlite``, ``deeplab``): it can return
intermediate maps and, past an output stride, dilate instead of striding.
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
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise -> 1x1 linear projection.

    ``dilation`` > 1 makes the depthwise conv atrous (padding = dilation keeps
    the size), as DeepLab does past its output stride. With
    ``return_expansion`` the block returns ``(output, expansion)``, the
    expansion's ReLU6 output (TF-slim's ``layer_k/expansion_output``; the
    input when t = 1), which SSDLite taps.
    """

    features: int
    stride: int
    expansion: int
    dilation: int = 1
    return_expansion: bool = False
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5)
        conv = functools.partial(self.conv, use_bias=False)
        inputs = x
        hidden = int(round(x.shape[-1] * self.expansion))
        if self.expansion != 1:
            x = nn.relu6(norm(name="expand_bn")(conv(hidden, (1, 1), name="expand")(x)))
        expansion = x
        d = self.dilation
        x = conv(hidden, (3, 3), strides=(self.stride, self.stride), padding=((d, d), (d, d)),
                 kernel_dilation=(d, d), feature_group_count=hidden, name="depthwise")(x)
        x = nn.relu6(norm(name="depthwise_bn")(x))
        x = norm(name="project_bn")(conv(self.features, (1, 1), name="project")(x))
        if self.stride == 1 and inputs.shape[-1] == self.features:
            x = x + inputs
        return (x, expansion) if self.return_expansion else x


def v2_blocks(settings: Sequence[tuple[int, int, int, int]], width: float, stem_stride: int = 2,
              output_stride: int | None = None) -> list[tuple[int, int, int, int]]:
    """``(features, stride, expansion t, dilation)`` of every inverted residual, in order.

    ``output_stride`` (None: no limit) follows TF-slim ``mobilenet.py``: once
    the running stride (``stem_stride`` times the block strides so far) equals
    it, a would-be stride-s block runs at stride 1 with the current rate and
    multiplies the rate by s for the blocks after it (DeepLab, Chen et al.
    2017, section 3.1). Raises if the output stride is never reached.
    """
    blocks, current, rate = [], stem_stride, 1
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            if current == output_stride:
                blocks.append((make_divisible(c * width), 1, t, rate))
                rate *= stride
            else:
                blocks.append((make_divisible(c * width), stride, t, 1))
                current *= stride
    if output_stride is not None and current != output_stride:
        raise ValueError(f"output_stride {output_stride} is not reached by the strides of "
                         f"this MobileNet V2 (it ends at {current})")
    return blocks


def v2_trunk(x: jax.Array, train: bool, *, width: float, stem_stride: int = 2,
             settings: Sequence[tuple[int, int, int, int]] = tuple(V2_SETTINGS),
             output_stride: int | None = None, include_last: bool = True,
             expansion_taps: Sequence[int] = (), conv: ModuleDef = nn.Conv) -> dict[str, jax.Array]:
    """MobileNet V2's stem, inverted residuals and last 1x1 conv (Sandler et al. 2018, Table 2).

    Call it inside an ``nn.compact`` method: the layers (``stem``, ``stem_bn``,
    ``block0`` ... ``block16``, ``last``, ``last_bn``) are created in the
    calling module, which is how ``MobileNetV2`` keeps its parameter names
    while ``SSDLite`` and ``DeepLabV3`` reuse the trunk.

    Args:
      x: images ``(B, H, W, C)``.
      train: BatchNorm uses batch statistics (and updates ``batch_stats``).
      width: width multiplier (channels ``make_divisible(c * width)``).
      stem_stride: 2 (reference) or 1 (small-image adaptation).
      settings: ``(t, c, n, s)`` rows.
      output_stride: dilate instead of stride past it (``v2_blocks``).
      include_last: add the ``make_divisible(1280 * max(1, width))`` 1x1 conv.
      expansion_taps: block indices whose expansion output is returned.
      conv: the conv layer (``TapConv`` for fast depthwise convs on CPU).

    Returns:
      Endpoints: ``"stem"``, ``"block{i}"`` for every block,
      ``"block{i}/expansion"`` for ``i`` in ``expansion_taps`` and ``"last"``
      when ``include_last``; each ``(B, h, w, channels)``.
    """
    _check_width("width_multiplier", width)
    check_stem_stride(stem_stride)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5)
    x = conv(make_divisible(32 * width), (3, 3), strides=(stem_stride,) * 2,
             padding=((1, 1), (1, 1)), use_bias=False, name="stem")(x)
    x = nn.relu6(norm(name="stem_bn")(x))
    endpoints = {"stem": x}
    for i, (features, stride, t, dilation) in enumerate(
            v2_blocks(settings, width, stem_stride, output_stride)):
        tapped = i in expansion_taps
        x = InvertedResidual(features, stride, t, dilation=dilation, return_expansion=tapped,
                             conv=conv, name=f"block{i}")(x, train)
        if tapped:
            x, endpoints[f"block{i}/expansion"] = x
        endpoints[f"block{i}"] = x
    if include_last:
        x = conv(make_divisible(1280 * max(1.0, width)), (1, 1), use_bias=False, name="last")(x)
        endpoints["last"] = nn.relu6(norm(name="last_bn")(x))
    return endpoints


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
        x = v2_trunk(x, train, width=self.width_multiplier, stem_stride=self.stem_stride,
                     settings=self.settings, conv=self.conv)["last"]
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier")(x)
