"""SEP-Net pattern binarization (Li, Wang, Lv, Yang 2017), one layer at a time.

Only convolution kernels with spatial size ``k x k``, ``k > 1``, are
binarized: ``W ~= alpha * sign(W)`` with one ``alpha = mean|W|`` per output
filter, the scale minimising ``||W - alpha B||``; 1x1 convolutions and dense
layers stay float.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_pattern_kernel(name: str, leaf) -> bool:
    """True for conv kernels ``(kh, kw, in, out)`` named ``.../kernel`` with kh, kw > 1."""
    shape = np.shape(leaf)
    return name.endswith("kernel") and len(shape) == 4 and shape[0] > 1 and shape[1] > 1


def signs(w: jax.Array) -> jax.Array:
    """The fixed pattern: int8 +1 where ``w >= 0``, -1 elsewhere."""
    return jnp.where(w >= 0, 1, -1).astype(jnp.int8)


def scales(w: jax.Array) -> jax.Array:
    """``alpha (out,)``: the mean magnitude of each output filter (last axis)."""
    return jnp.mean(jnp.abs(w), axis=tuple(range(w.ndim - 1)))
