"""DeepLabV3 on MobileNet V2 (Chen et al. 2017; Sandler et al. 2018, section 6.3).

The mobile variant of the paper's Table 7 and of the DeepLab model zoo
(``mobilenetv2_coco_voc_trainaug``), following ``deeplab/model.py``:

* trunk: ``mobilenet.v2_trunk`` up to the 320-channel second-to-last
  feature map (the 1280 1x1 conv is dropped: "DeepLabv3 heads are built on
  top of the second last feature map"); past ``output_stride`` (16, or 8)
  the blocks keep stride 1 and dilate their depthwise convs instead (TF-slim
  rule, ``mobilenet.v2_blocks``);
* head without ASPP: an image-pooling branch (global average pool, 1x1 conv
  256 + BatchNorm + ReLU, broadcast back to the map, i.e. a bilinear
  upsampling of a 1x1 map) and a 1x1 conv 256 + BatchNorm + ReLU branch
  (``aspp0``), concatenated, a 1x1 conv 256 + BatchNorm + ReLU projection,
  dropout 0.1 (DeepLab's keep_prob 0.9), a 1x1 conv with bias to the classes;
* logits resized bilinearly (``jax.image.resize``, half-pixel centres; TF
  uses align_corners) to the input size.

``num_classes`` counts every label, background included (21 for VOC).

Size (``zylax.nets.summary``, 21 classes, width 1, output stride 16):
**2,113,557 parameters** counting BatchNorm's scale and bias (2,080,469
without them; moving statistics are never counted): the paper's 2.11M
(Table 7, "OS 16, no ASPP"). MACs (one per multiply-accumulate of every
conv; BatchNorm, activations, pooling and the bilinear resize not counted):
**2,740,709,056 at 513x513**, the crop DeepLab evaluates VOC at
(``eval_crop_size=513,513``, maps 257, 129, 65, 33), 0.3% below the
paper's and model zoo's 2.75B; at 512x512 (maps 256 ... 32) it is
2,603,958,272, 5.3% below. So the 2.75B is a 513x513 figure, with the
MobileNet convention of ``summary`` and the 1280-channel last conv dropped.

``DeepLabV3Small`` is the configuration for 96x96 one-channel scenes
(``zylax.scenes``, 11 labels: background + 10): width 0.35, output stride 8
(12x12 logits before the resize: items of 20-48 px span 2.5 to 6 cells)
and a head 128 wide instead of 256 (at 256 the head is 39% of the 60.5M
MACs and 44% of the 443K parameters). 313,547 parameters and 44,094,464
MACs; ``output_stride=16`` gives 6x6 logits at 14.6M MACs. Wrapped as
``Rescaled(DeepLabV3Small(11), 1.25)`` (registered as
``deeplabv3_mobilenet_v2_120``) it runs on the scenes resized to 120x120:
15x15 logits, the same parameters, 68.9M MACs. Step times and scores:
RESULTS.md, "Small configurations for the 96x96 scenes" and "DeepLabV3 at
120x120"; BENCHMARKS.md, section 9.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zylax.nets.layers import TapConv
from zylax.nets.mobilenet import v2_trunk
from zylax.resizing import resize_dense

ModuleDef = Callable[..., nn.Module]

OUTPUT_STRIDES = (8, 16)
"""Output strides DeepLabV3 supports (Chen et al. 2017 train at 16 and evaluate at 8 or 16)."""


class DeepLabV3(nn.Module):
    """DeepLabV3 semantic segmentation on MobileNet V2 (see the module docstring).

    Attributes:
      num_classes: labels, background included (21 for VOC, 11 for the scenes).
      width_multiplier: of the MobileNet V2 trunk (the head stays ``depth`` wide).
      output_stride: 16 or 8, the stride of the 320-channel map.
      stem_stride: 2 (reference) or 1.
      depth: channels of the head's convs (256).
      dropout_rate: after the projection (DeepLab: 0.1).
      conv: the conv layer (``TapConv`` for fast depthwise convs on CPU).
    """

    num_classes: int
    width_multiplier: float = 1.0
    output_stride: int = 16
    stem_stride: int = 2
    depth: int = 256
    dropout_rate: float = 0.1
    conv: ModuleDef = nn.Conv

    def __post_init__(self):
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes (background included) must be at least 2, got "
                             f"{self.num_classes}")
        super().__post_init__()

    def _conv_bn_relu(self, x: jax.Array, train: bool, name: str) -> jax.Array:
        x = self.conv(self.depth, (1, 1), use_bias=False, name=name)(x)
        norm = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                            name=f"{name}_bn")
        return nn.relu(norm(x))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Images ``(B, H, W, C)`` -> per-pixel logits ``(B, H, W, num_classes)``."""
        features = v2_trunk(x, train, width=self.width_multiplier, stem_stride=self.stem_stride,
                            output_stride=self.output_stride, include_last=False,
                            conv=self.conv)["block16"]  # the last bottleneck: 320 channels
        pooled = jnp.mean(features, axis=(1, 2), keepdims=True)
        pooled = self._conv_bn_relu(pooled, train, "image_pooling")
        branches = [jnp.broadcast_to(pooled, (*features.shape[:3], self.depth)),
                    self._conv_bn_relu(features, train, "aspp0")]
        y = self._conv_bn_relu(jnp.concatenate(branches, -1), train, "concat_projection")
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self.conv(self.num_classes, (1, 1), name="classifier")(y)
        return resize_dense(y, *x.shape[1:3])


def DeepLabV3Small(num_classes: int, **overrides) -> DeepLabV3:  # noqa: N802 - a model constructor
    """DeepLabV3 for 96x96 one-channel scenes (``zylax.scenes``: 11 labels, background included).

    Width 0.35, output stride 8 (12x12 logits, resized to the input), head
    depth 128: 313,547 parameters and 44.1M MACs for 11 labels. ``conv``
    defaults to ``TapConv`` (the same parameters as ``nn.Conv``, faster
    depthwise convs on CPU); ``overrides`` replace any field.
    """
    settings = dict(width_multiplier=0.35, output_stride=8, depth=128, conv=TapConv)
    return DeepLabV3(num_classes=num_classes, **{**settings, **overrides})
