"""SEP-Net (Li, Wang, Lv, Yang 2017), designed from the paper's description.

The paper's layer table is not available (see ``shared/research/architectures.md``
section 4), so this is a reconstruction from what the paper states, with every
choice listed here:

* **Pattern Residual Block** (PRB): ``O(x) = C_kxk(x) + C_1x1(x)``, a k x k and a
  1x1 convolution in parallel on the same input with the same stride, summed,
  then BatchNorm + ReLU. Both are group convolutions with ``groups`` (N = 4)
  groups, no bias (the BN follows). The k x k branch is what pattern
  binarization turns into ``alpha * sign(W)``; the 1x1 branch stays float.
* **SEP module** (C channels): 1x1 group conv reducing C -> C/2, BN + ReLU;
  PRB C/2 -> C/2; PRB C/2 -> C/4 ("two PRBs of different widths"); 1x1 group
  conv recovering C/4 -> C, BN; identity residual added, then ReLU.
* **Body** (alternating conv layers and SEP modules): a stem PRB 3x3/2 with 32
  channels (dense, ``groups=1``, as the input has few channels); then stages of
  (a 3x3/2 group-conv PRB to the stage width, followed by SEP modules): widths
  64, 128, 256, 512 with 1, 2, 1, 1 SEP modules. Five stride-2 layers, so
  224x224 inputs end at 7x7, as MobileNet.
* The stem and the stride-2 conv layers are PRBs rather than plain k x k convs,
  so every k x k kernel in the net has a float 1x1 partner and pattern
  binarization can binarize all of them. With plain 3x3 convs there (holding
  56% of the k x k weights), binarizing every k x k kernel of a trained net
  cost 6.6 points on Fashion-MNIST after 3 epochs of fine-tuning (RESULTS.md).
* ``stem_stride=1`` is the 32x32 adaptation of ``MobileNetV1``: same
  parameters, the body sees the input as if it were twice the size.
* **Head**: global average pooling, dropout, dense classifier (with bias).
* Group counts must divide every channel count: ``groups`` in {1, 2, 4, 8}.

At 1000 classes and 3 input channels this has 1,366,152 parameters (the
paper: about 1.3M), 513K of them in the classifier, as in MobileNet, and
149M multiply-adds at 224x224.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax

from zylax.nets.mobilenet import check_stem_stride

ModuleDef = Callable[..., nn.Module]

STAGES = ((64, 1), (128, 2), (256, 1), (512, 1))
"""(channels, SEP modules) per stage."""


class PatternResidualBlock(nn.Module):
    """k x k and 1x1 group convolutions in parallel (same stride), summed, BN + ReLU.

    ``(B, H, W, C) -> (B, ceil(H / stride), ceil(W / stride), features)``:
    ``O(x) = ReLU(BN(C_kxk(x) + C_1x1(x)))`` (SEP-Net, Pattern Residual Block).
    """

    features: int
    kernel: int = 3
    stride: int = 1
    groups: int = 4
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(self.conv, use_bias=False, feature_group_count=self.groups,
                                 strides=(self.stride, self.stride))
        pad = self.kernel // 2
        pattern = conv(self.features, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)),
                       name="pattern")(x)
        pointwise = conv(self.features, (1, 1), padding="VALID", name="pointwise")(x)
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(pattern + pointwise)
        return nn.relu(y)


class SEPModule(nn.Module):
    """1x1 reduce -> PRB -> PRB -> 1x1 recover, plus the identity."""

    groups: int = 4
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        channels = x.shape[-1]
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        conv = functools.partial(self.conv, use_bias=False, feature_group_count=self.groups)
        y = nn.relu(norm(name="reduce_bn")(conv(channels // 2, (1, 1), name="reduce")(x)))
        y = PatternResidualBlock(channels // 2, groups=self.groups, conv=self.conv,
                                 name="prb1")(y, train)
        y = PatternResidualBlock(channels // 4, groups=self.groups, conv=self.conv,
                                 name="prb2")(y, train)
        y = norm(name="recover_bn")(conv(channels, (1, 1), name="recover")(y))
        return nn.relu(x + y)


class SEPNet(nn.Module):
    """SEP-Net classifier (see the module docstring for the design)."""

    num_classes: int = 1000
    groups: int = 4
    stages: Sequence[tuple[int, int]] = STAGES
    dropout_rate: float = 0.2
    stem_stride: int = 2
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.groups not in (1, 2, 4, 8):
            raise ValueError(f"groups must be 1, 2, 4 or 8, got {self.groups}")
        check_stem_stride(self.stem_stride)
        prb = functools.partial(PatternResidualBlock, stride=2, conv=self.conv)
        x = prb(32, groups=1, stride=self.stem_stride, name="stem")(x, train)
        for s, (channels, modules) in enumerate(self.stages, start=1):
            x = prb(channels, groups=self.groups, name=f"down{s}")(x, train)
            for m in range(modules):
                x = SEPModule(self.groups, conv=self.conv, name=f"sep{s}_{m}")(x, train)
        x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier")(x)
