"""``pattern``: SEP-Net pattern binarization (Li, Wang, Lv, Yang 2017).

Only convolution kernels with spatial size k x k, k > 1, are taken: each
becomes its fixed sign pattern times one scale per output filter,
``alpha = mean|W|`` (the scale minimising ``||W - alpha sign(W)||``), and
fine-tuning trains the scales (and every float leaf: the 1 x 1 kernels,
dense layers, biases) while the patterns stay fixed. Stored by the
``pattern`` codec: the scales plus 1 bit a weight.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from zylax.containers import Pattern as PatternLeaf
from zylax.methods.base import Method
from zylax.transforms import pattern as patterns
from zylax.transforms import tree as ztree


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pattern(Method):
    """SEP-Net pattern binarization of k x k kernels (module docstring)."""

    name: ClassVar[str] = "pattern"

    def accepts(self, name, leaf) -> bool:
        """k x k convolution kernels, k > 1."""
        return patterns.is_pattern_kernel(name, leaf)

    def init_leaves(self, leaves, key):
        del key
        latent, aux = {}, {}
        for name, w in leaves.items():
            if ztree.is_concrete(w) and np.any(np.asarray(w) == 0):
                raise ValueError(f"pattern: {name!r} holds exact zeros (pruned weights); a "
                                 "SEP-Net pattern is dense: exclude it or prune other layers")
            latent[name] = jnp.mean(jnp.abs(w), axis=tuple(range(w.ndim - 1)))
            aux[name] = {"signs": jnp.where(w >= 0, 1, -1).astype(jnp.int8)}
        return latent, {}, aux

    def apply_leaves(self, latent, own, aux, rng=None):
        del own, rng
        return {name: alpha * aux[name]["signs"].astype(alpha.dtype)
                for name, alpha in latent.items()}

    def store_leaves(self, latent, own, aux):
        del own
        return {name: PatternLeaf(np.asarray(alpha), np.asarray(aux[name]["signs"]))
                for name, alpha in latent.items()}


NAME = "pattern"
FACTORY = Pattern
