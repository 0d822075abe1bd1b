"""``ternary``: Trained Ternary Quantization (Zhu, Han, Mao, Dally 2017).

Each selected layer runs as ``w_pos`` where its latent weight exceeds
``delta = t * max|w|``, ``-w_neg`` below ``-delta`` and 0 between (eq. 6,
``t = 0.05``); ``w_pos`` and ``w_neg`` are learned with the latent weights
through the straight-through gradients of eqs. 7-8
(``zylax.straight_through.ternary``). The paper keeps the first and last
layers full precision (``keep_float``, in execution order). Scales start at
the mean magnitude beyond the threshold on their side (TWN's optimum; the
official code starts at 1 after normalising each layer by its maximum, the
same function). Zeros of the given weights (pruning) stay zero. Stored by the
``ternary`` codec: entropy-coded codes and the two scales.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from zylax.containers import Ternary as TernaryLeaf
from zylax.methods.base import Method
from zylax.transforms import ternary as ttq
from zylax.transforms import tree as ztree


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ternary(Method):
    """TTQ (module docstring).

    Attributes:
      t: the threshold factor, in (0, 1); may be traced.
      keep_float: default ``("first", "last")``, as the paper.
    """

    t: float = 0.05
    keep_float: tuple[str, ...] = ("first", "last")

    name: ClassVar[str] = "ternary"

    def __post_init__(self):
        super().__post_init__()
        if ztree.is_concrete(self.t) and not 0.0 < float(self.t) < 1.0:
            raise ValueError(f"ternary: t must lie in (0, 1), got {self.t!r}")

    def init_leaves(self, leaves, key):
        del key
        own, aux = {}, {}
        for name, w in leaves.items():
            w_pos, w_neg = ttq.initial_scales(w, self.t)
            own[name] = {"w_pos": w_pos, "w_neg": w_neg}
            aux[name] = {"keep": w != 0}
        return dict(leaves), own, aux

    def apply_leaves(self, latent, own, aux, rng=None):
        del rng
        return {name: jnp.where(aux[name]["keep"],
                                ttq.ternarize(w, own[name]["w_pos"], own[name]["w_neg"], self.t),
                                jnp.zeros_like(w))
                for name, w in latent.items()}

    def store_leaves(self, latent, own, aux):
        out = {}
        for name, w in latent.items():
            codes = np.where(np.asarray(aux[name]["keep"]), np.asarray(ttq.codes(w, self.t)), 0)
            out[name] = TernaryLeaf(codes.astype(np.int8), np.asarray(own[name]["w_pos"]),
                                    np.asarray(own[name]["w_neg"]))
        return out


NAME = "ternary"
FACTORY = Ternary
