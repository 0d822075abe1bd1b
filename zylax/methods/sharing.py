"""``share``: trained weight sharing by k-means (Deep Compression, Han et al. 2015, section 3).

Each selected layer's kept weights are clustered by 1-D k-means into
``k = 2**bits`` centroids (linear initialisation, Han's finding); the layer
becomes a codebook (trainable latent) and an index per weight (aux), index
``k`` marking a pruned weight, decoded as an exact zero. The forward pass is a
gather, so the gradient reaching centroid ``c_k`` is Han's eq. 3,
``dL/dc_k = sum_ij dL/dW_ij 1(I_ij = k)``: fine-tuning the codebooks with any
optax optimizer is the centroid update. Stored by the ``shared`` codec:
codebook plus Huffman-coded indices, dense or as relative gaps.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from zylax.containers import Shared
from zylax.methods.base import Method
from zylax.transforms import sharing
from zylax.transforms import tree as ztree


@dataclasses.dataclass(frozen=True, kw_only=True)
class Share(Method):
    """k-means weight sharing (module docstring).

    Attributes:
      bits: codebook bits per layer: an int, ``{regex: bits}``, or None for
        Han's defaults (8 for convolution kernels, 5 for dense ones). Static:
        it sets the codebook's shape.
      index_bits: the gap width of the sparse form: an int, ``{regex: bits}``,
        ``"auto"`` (the smallest file, default), ``"ans"`` (the smallest of those and
        ANS-coded masks: ``zylax.codecs.shared``) or None (Han's 8 conv / 5 dense).
      centroid_init: ``"linear"`` (Han's finding), ``"density"`` or ``"random"``.
    """

    bits: Any = None
    index_bits: Any = "auto"
    centroid_init: str = "linear"

    name: ClassVar[str] = "share"

    def __post_init__(self):
        super().__post_init__()
        values = self.bits.values() if isinstance(self.bits, Mapping) else [self.bits]
        for value in values:
            if value is not None:
                sharing.check_bits("share", value)
        if self.centroid_init not in sharing.INITS:
            raise ValueError(f"share: centroid_init must be one of {sharing.INITS}, got "
                             f"{self.centroid_init!r}")
        widths = (self.index_bits.values() if isinstance(self.index_bits, Mapping)
                  else [self.index_bits])
        for width in widths:
            if width not in (None, "auto", "ans") and (
                    isinstance(width, bool) or not isinstance(width, numbers.Integral)
                    or not 1 <= width <= 16):
                raise ValueError(f"share: index_bits must be an integer in [1, 16], None, "
                                 f"'auto' or 'ans', got {width!r}")

    def init_leaves(self, leaves, key):
        latent, aux = {}, {}
        for i, (name, w) in enumerate(leaves.items()):
            keep = w != 0
            if ztree.is_concrete(keep) and np.size(w) and not np.any(keep):
                raise ValueError(f"share: {name!r} has no kept weight (pruned whole); "
                                 "exclude it")
            bits = sharing.layer_bits(name, w, self.bits)
            result = sharing.kmeans(w, bits, self.centroid_init, keep, key=jax.random.fold_in(key, i))
            latent[name] = result.codebook
            aux[name] = {"indices": result.indices.astype(sharing.index_dtype(2 ** bits))}
        return latent, {}, aux

    def apply_leaves(self, latent, own, aux, rng=None):
        del own, rng
        return {name: jnp.append(codebook, jnp.zeros(1, codebook.dtype))[aux[name]["indices"]]
                for name, codebook in latent.items()}

    def store_leaves(self, latent, own, aux):
        del own
        out = {}
        for name, codebook in latent.items():
            bits = (ztree.per_leaf_value(name, None, self.index_bits)
                    if isinstance(self.index_bits, Mapping) else self.index_bits)
            out[name] = Shared(np.asarray(codebook), np.asarray(aux[name]["indices"]), bits)
        return out


NAME = "share"
FACTORY = Share
