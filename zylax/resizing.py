"""Bilinear resizing of image batches and of per-pixel outputs (``jax.image.resize``).

One definition of "an input resized by a factor" (sides ``round(s * side)``)
and of "per-pixel outputs brought back to a size", shared by
``nets.Rescaled``, multi-scale inference (``tasks``) and the segmentation
loss (``detection.pixel_cross_entropy``).
"""

from __future__ import annotations

import jax

SCALE_RANGE = (0.1, 8.0)
"""Accepted resize factors (inclusive): ``nets.Rescaled``, ``tasks.Segmentation(scales=)``."""


def scaled_size(size: int, scale: float) -> int:
    """``round(scale * size)``: the side of an input of side ``size`` resized by ``scale``."""
    return round(scale * size)


def resize_images(images: jax.Array, scale: float) -> jax.Array:
    """Bilinear resize of ``(B, H, W, C)`` to ``(B, round(s H), round(s W), C)`` (identity at 1)."""
    if scale == 1:
        return images
    b, h, w, c = images.shape
    return jax.image.resize(images, (b, scaled_size(h, scale), scaled_size(w, scale), c),
                            "bilinear")


def resize_dense(outputs: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of per-pixel outputs ``(B, h, w, K)`` to ``(B, height, width, K)``."""
    if outputs.shape[1:3] == (height, width):
        return outputs
    return jax.image.resize(outputs, (outputs.shape[0], height, width, outputs.shape[-1]),
                            "bilinear")


def at_input_size(outputs, images: jax.Array):
    """Per-pixel outputs (any rank-4 array) resized to the ``H x W`` of ``images (B, H, W, C)``;
    any other output (class logits, a detector's tuple) unchanged."""
    if isinstance(outputs, jax.Array) and outputs.ndim == 4:
        return resize_dense(outputs, *images.shape[1:3])
    return outputs
