"""SSDLite on MobileNet V2 (Sandler et al. 2018, section 6.2; Liu et al. 2016).

Follows the TF Object Detection API ``ssdlite_mobilenet_v2_coco`` config and
``ssd_mobilenet_v2_feature_extractor.py``:

* taps: the expansion output of the 13th bottleneck (``block13/expansion``,
  TF-slim ``layer_15/expansion_output``: stride 16, 576 channels at width 1)
  and the last 1x1 conv (``layer_19``: stride 32, 1280 channels);
* four extra maps, each a 1x1 conv to depth/2, then a 3x3 stride-2
  depthwise conv and a 1x1 conv to the depth (512, 256, 256, 128; TF's
  ``max(int(depth * width), 16)``), every conv with BatchNorm + ReLU6 and
  'SAME' padding;
* on each map two box predictors (classes; boxes), each a 3x3 depthwise
  conv + BatchNorm + ReLU6 then a 1x1 conv with bias;
* anchors from ``detection.AnchorConfig`` (6 maps; 3 per location on the
  first, 6 elsewhere; scales 0.2 to 0.95).

The trunk is ``mobilenet.v2_trunk`` (torchvision rounding, explicit padding
1, BatchNorm momentum 0.9 / eps 1e-5, also used by the extra layers and the
predictors); TF pads stride-2 convs 'SAME' and would shrink the last conv
below width 1 (here it stays 1280, as torchvision's). ``__call__`` returns
``(class_logits (B, A, num_classes + 1), box_deltas (B, A, 4))`` with the
background at index 0 and anchors in ``anchors(image_size)``'s order.

Size (``zylax.nets.summary``, 320x320x3, 80 COCO classes + background = 81
outputs, width 1; 2,034 anchors on 20x20, 10x10, 5x5, 3x3, 2x2 and 1x1 maps):
**4,337,013 parameters** counting BatchNorm's scale and bias (4,286,261
without them; moving statistics are never counted) and **788,830,144 MACs**
(one per multiply-accumulate of every conv; BatchNorm, activations and
additions not counted). Paper, Table 6: 4.3M and 0.8B, so +0.9% and -1.4%.
The paper's Table 5 gives the SSDLite part alone (extra layers and
predictors) as 2.1M / 0.35B: here it is 2,113,141 parameters (BatchNorm
included) and 177,617,344 MACs. The parameters match; the MACs are half
the paper's, which 2 FLOPs per MAC would explain, but that reading is not
established (Table 6's total matches MACs).

``SSDLiteSmall`` is the configuration for 96x96 one-channel scenes
(``zylax.scenes``: items of side 20-48 px; tight boxes of sqrt-area 0.16 to
0.42 of the image and width/height 0.4 to 2.4, 5th-95th percentiles):
width 0.35, the reference stem, and maps at strides 8, 16 and 32 (12x12,
6x6, 3x3): the expansion outputs of bottlenecks 6 and 13 and the last conv,
no extra layers. Anchors: scales 0.15 to 0.45 (14 to 43 px), aspect ratios
1, 2, 1/2 plus the interpolated 1:1 (4 per location, no reduced lowest
layer), 756 in all; an object then has 2.3 anchors at IoU >= 0.5 on average
and 12% rely on forced matching alone (with the reference maps, 6x6 and
coarser, half would). 524,596 parameters and 12,506,544 MACs for 10
classes. Step times and the stem's stride against the reference taps:
RESULTS.md, "Small configurations for the 96x96 scenes".
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zylax.detection import AnchorConfig
from zylax.nets.layers import TapConv
from zylax.nets.mobilenet import V2_SETTINGS, v2_blocks, v2_trunk

ModuleDef = Callable[..., nn.Module]

STRIDE16_TAP = 13
"""Index of the bottleneck whose expansion output is the stride-16 map (TF ``layer_15``)."""


def _norm(train: bool) -> Callable[..., nn.Module]:
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5)


class ExtraLayer(nn.Module):
    """One SSD extra feature map: 1x1 conv, 3x3/2 depthwise, 1x1 conv; BN + ReLU6 after each."""

    bottleneck: int
    features: int
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm, conv = _norm(train), functools.partial(self.conv, use_bias=False)
        x = nn.relu6(norm(name="reduce_bn")(conv(self.bottleneck, (1, 1), name="reduce")(x)))
        x = conv(self.bottleneck, (3, 3), strides=(2, 2), padding="SAME",
                 feature_group_count=self.bottleneck, name="depthwise")(x)
        x = nn.relu6(norm(name="depthwise_bn")(x))
        return nn.relu6(norm(name="pointwise_bn")(conv(self.features, (1, 1),
                                                        name="pointwise")(x)))


class BoxPredictor(nn.Module):
    """SSDLite predictor of one map: per output, 3x3 depthwise + BN + ReLU6 then a 1x1 conv.

    Returns ``(class_logits (B, h * w * anchors, num_outputs), box_deltas
    (B, h * w * anchors, 4))``, ordered by row, column, anchor.
    """

    num_anchors: int
    num_outputs: int
    conv: ModuleDef = nn.Conv

    def _predict(self, x: jax.Array, train: bool, name: str, depth: int) -> jax.Array:
        channels = x.shape[-1]
        x = self.conv(channels, (3, 3), padding="SAME", feature_group_count=channels,
                      use_bias=False, name=f"{name}_depthwise")(x)
        x = nn.relu6(_norm(train)(name=f"{name}_depthwise_bn")(x))
        x = self.conv(self.num_anchors * depth, (1, 1), name=name)(x)
        return x.reshape(x.shape[0], -1, depth)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        return (self._predict(x, train, "classifier", self.num_outputs),
                self._predict(x, train, "box", 4))


class SSDLite(nn.Module):
    """SSDLite detector on MobileNet V2 (see the module docstring).

    Attributes:
      num_classes: object classes, without the background (80 for COCO).
      width_multiplier: of the MobileNet V2 trunk and the extra layers.
      stem_stride: 2 (reference) or 1 (halves every map's stride).
      taps: bottlenecks whose expansion outputs are predicted from, before
        the last 1x1 conv (reference: the 13th, stride 16).
      extra_depths: depth of each extra map after the two taps.
      anchor_config: scales and aspect ratios (``detection.AnchorConfig``).
      min_depth: smallest extra-layer depth (TF's ``min_depth``).
      conv: the conv layer (``TapConv`` for fast depthwise convs on CPU).
    """

    num_classes: int
    width_multiplier: float = 1.0
    stem_stride: int = 2
    taps: Sequence[int] = (STRIDE16_TAP,)
    extra_depths: Sequence[int] = (512, 256, 256, 128)
    anchor_config: AnchorConfig = AnchorConfig()
    min_depth: int = 16
    conv: ModuleDef = nn.Conv

    def __post_init__(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes (object classes, without the background) must be "
                             f"at least 1, got {self.num_classes}")
        super().__post_init__()

    def _depth(self, depth: float) -> int:
        return max(int(depth * self.width_multiplier), self.min_depth)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Images ``(B, H, W, C)`` -> ``(class_logits (B, A, K + 1), box_deltas (B, A, 4))``."""
        endpoints = v2_trunk(x, train, width=self.width_multiplier, stem_stride=self.stem_stride,
                             expansion_taps=self.taps, conv=self.conv)
        maps = [endpoints[f"block{i}/expansion"] for i in self.taps] + [endpoints["last"]]
        for i, depth in enumerate(self.extra_depths):
            maps.append(ExtraLayer(self._depth(depth / 2), self._depth(depth), conv=self.conv,
                                   name=f"extra{i}")(maps[-1], train))
        per_location = self.anchor_config.anchors_per_location(len(maps))
        predictions = [BoxPredictor(k, self.num_classes + 1, conv=self.conv,
                                    name=f"predictor{i}")(feature_map, train)
                       for i, (feature_map, k) in enumerate(zip(maps, per_location))]
        logits, deltas = zip(*predictions)
        return jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1)

    def feature_map_sizes(self, image_size: int | Sequence[int]) -> list[tuple[int, int]]:
        """``(height, width)`` of every predicted map for an input of ``image_size``.

        Every stride-2 layer maps n to ceil(n / 2), so a map of stride s is
        ``ceil(size / s)``: a tap's stride is the stem's times the strides of
        the blocks before it, the last conv's that of the whole trunk, and
        each extra layer doubles it.
        """
        height, width = np.broadcast_to(np.asarray(image_size, int), (2,)).tolist()
        block_strides = [stride for _, stride, _, _ in
                         v2_blocks(V2_SETTINGS, self.width_multiplier, self.stem_stride)]
        strides = [self.stem_stride * math.prod(block_strides[:i]) for i in self.taps]
        last = self.stem_stride * math.prod(block_strides)
        strides += [last * 2 ** i for i in range(1 + len(self.extra_depths))]
        return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]

    def anchors(self, image_size: int | Sequence[int]) -> np.ndarray:
        """Anchors of an ``image_size`` input: float32 ``(A, 4)`` normalised ``(cx, cy, w, h)``."""
        return self.anchor_config.anchors(self.feature_map_sizes(image_size), image_size)


SMALL_ANCHORS = AnchorConfig(min_scale=0.15, max_scale=0.45, aspect_ratios=(1.0, 2.0, 0.5),
                             reduce_boxes_in_lowest_layer=False)
"""Anchors of ``SSDLiteSmall``: 15-45% of the image side, 4 per location."""


def SSDLiteSmall(num_classes: int, **overrides) -> SSDLite:  # noqa: N802 - a model constructor
    """SSDLite for 96x96 one-channel scenes of 20-48 px items (``zylax.scenes``).

    Width 0.35; anchors on the expansion outputs of bottlenecks 6 (stride 8,
    12x12) and 13 (stride 16, 6x6) and on the last conv (3x3), no extra
    layers; ``SMALL_ANCHORS`` (756 anchors at 96x96). 524,596 parameters and
    12.5M MACs for 10 classes. ``conv`` defaults to ``TapConv`` (the same
    parameters as ``nn.Conv``, 3-4x faster depthwise convs on CPU);
    ``overrides`` replace any field.
    """
    settings = dict(width_multiplier=0.35, taps=(6, STRIDE16_TAP), extra_depths=(),
                    anchor_config=SMALL_ANCHORS, conv=TapConv)
    return SSDLite(num_classes=num_classes, **{**settings, **overrides})
