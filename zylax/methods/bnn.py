"""``binary``: binary weights (BNN, Courbariaux, Hubara et al. 2016).

Each selected layer runs as ``sign(w)`` of its latent weights
(deterministic, eq. 1, or stochastic: +1 with probability
``hard_sigmoid(w)``, eq. 2, while training), through the straight-through
gradient cancelled where ``|w| > 1`` (``zylax.straight_through``); after every
update the latent weights are clipped to [-1, 1], which keeps that gradient
alive. ``scale="channel"`` multiplies each output channel by a learned scale
(started at the channel's mean magnitude, XNOR-Net's optimum), so a layer
not followed by BatchNorm keeps its range; ``scale=None`` is the paper's
plain +-1. The first and last layers stay float by default (``keep_float``).
Zeros of the given weights (pruning) stay zero. Stored 1 bit a weight by
the ``binary`` codec (``ternary`` when the layer holds pruned zeros).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax import straight_through as st
from zylax.containers import Binary as BinaryLeaf
from zylax.containers import Ternary as TernaryLeaf
from zylax.methods.base import Method, latent_and_own
from zylax.transforms import binary

SCALES = (None, "channel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Binary(Method):
    """Binary weights (module docstring).

    Attributes:
      stochastic: sample the signs while training (eq. 2); inference is
        deterministic.
      scale: ``"channel"`` (a learned scale per output channel, default) or
        None (the paper's +-1, for layers followed by BatchNorm).
      keep_float: default ``("first", "last")``.
    """

    stochastic: bool = False
    scale: str | None = "channel"
    keep_float: tuple[str, ...] = ("first", "last")

    name: ClassVar[str] = "binary"

    def __post_init__(self):
        super().__post_init__()
        if self.scale not in SCALES:
            raise ValueError(f"binary: scale must be one of {SCALES}, got {self.scale!r}")

    def init_leaves(self, leaves, key):
        del key
        latent, own, aux = {}, {}, {}
        for name, w in leaves.items():
            if self.scale == "channel":
                top = jnp.max(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)
                latent[name] = w / jnp.where(top > 0, top, 1).astype(w.dtype)
                own[name] = {"scale": jnp.mean(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)}
            else:
                latent[name] = jnp.clip(w, -1, 1)
                own[name] = {}
            aux[name] = {"keep": w != 0}
        return latent, own, aux

    def apply_leaves(self, latent, own, aux, rng=None):
        out = {}
        for i, (name, w) in enumerate(latent.items()):
            if self.stochastic and rng is not None:
                signs = st.stochastic_sign(jax.random.fold_in(rng, i), w)
            else:
                signs = st.sign(w)
            signs = jnp.where(aux[name]["keep"], signs, jnp.zeros_like(signs))
            out[name] = signs * own[name]["scale"].astype(w.dtype) if own[name] else signs
        return out

    def leaf_tx(self, inner, steps):
        del steps
        return latent_and_own(optax.chain(inner, binary.clip_latent(".*")), inner)

    def store_leaves(self, latent, own, aux):
        out = {}
        for name, w in latent.items():
            keep = np.asarray(aux[name]["keep"])
            signs = np.where(np.asarray(w) >= 0, 1, -1).astype(np.int8)
            scale = (np.asarray(own[name]["scale"]) if own[name]
                     else np.ones((), np.asarray(w).dtype))
            if keep.all():
                out[name] = BinaryLeaf(signs, scale)
            else:
                out[name] = TernaryLeaf(np.where(keep, signs, 0).astype(np.int8), scale, scale)
        return out


NAME = "binary"
FACTORY = Binary
