"""``Rescaled``: any model run on its input resized by a factor, dense outputs resized back.

DeepLab's crop size as a wrapper (Chen et al. 2017 evaluate and train at a
fixed crop; Sec. 4.1 also infers at scales {0.5 ... 1.75}): for small
images a larger input gives a finer logit grid at the same parameters, e.g.
``DeepLabV3Small`` on 96x96 scenes resized to 120x120 has 15x15 logits
instead of 12x12 (RESULTS.md, "DeepLabV3 at 120x120"). The wrapper shares
the wrapped model's scope (``flax.linen.share_scope``), so its variables
have exactly the wrapped model's paths: a checkpoint, a warm start or a
``.zyl`` file of one loads into the other.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from zylax.nets.layers import mode_kwargs
from zylax.resizing import SCALE_RANGE, at_input_size, resize_images, scaled_size


class Rescaled(nn.Module):
    """``model`` run on images ``(B, H, W, C)`` resized bilinearly by ``scale``.

    A rank-4 output ``(B, h, w, K)`` (per-pixel logits) is resized
    bilinearly back to ``(B, H, W, K)``; any other output (class logits,
    a detector's ``(class_logits, box_deltas)``) is returned as the model
    gives it. ``train`` is passed on only when ``model.__call__`` has a
    parameter of that name (one called otherwise, e.g. ``training``, must
    have a default). ``num_classes`` and ``anchors(image_size)`` (for the
    resized size) are the wrapped model's (None where it has none), so
    segmentation and detection tasks accept the wrapper. The variables are
    the wrapped model's, at the same paths. Multi-scale inference on the
    wrapper (``tasks.Segmentation(scales=...)``, ``zylax evaluate --scales``)
    resizes its input again: the scales multiply.

    Attributes:
      model: any linen module mapping images to outputs.
      scale: resize factor in [0.1, 8]; sides become ``round(scale * side)``.
    """

    model: nn.Module
    scale: float

    def __post_init__(self):
        low, high = SCALE_RANGE
        scale = self.scale
        number = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
        if not number or not low <= scale <= high:
            raise ValueError(f"Rescaled scale must be a number in [{low:g}, {high:g}], "
                             f"got {scale!r}")
        super().__post_init__()

    def setup(self):
        nn.share_scope(self, self.model)

    @property
    def num_classes(self):
        """The wrapped model's ``num_classes`` (None when it has none)."""
        return getattr(self.model, "num_classes", None)

    @property
    def anchors(self) -> Callable[[int | Sequence[int]], np.ndarray] | None:
        """``image_size -> `` the wrapped model's anchors for the resized input (normalised
        boxes fit both sizes); None when the wrapped model has no ``anchors`` (not a detector)."""
        model_anchors = getattr(self.model, "anchors", None)
        if not callable(model_anchors):
            return None

        def anchors(image_size: int | Sequence[int]) -> np.ndarray:
            if isinstance(image_size, numbers.Integral):
                return model_anchors(scaled_size(image_size, self.scale))
            return model_anchors(tuple(scaled_size(s, self.scale) for s in image_size))

        return anchors

    def __call__(self, x: jax.Array, train: bool = False):
        """Images ``(B, H, W, C)`` -> the model's outputs, per-pixel ones at ``H x W``."""
        return at_input_size(self.model(resize_images(x, self.scale),
                                        **mode_kwargs(self.model, train)), x)
