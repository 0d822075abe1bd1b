"""Trained Ternary Quantization (Zhu, Han, Mao, Dally 2017).

The latent model is ``{"params": params, "scales": {name: {"w_pos", "w_neg"}}}``;
``ternarize(latent)`` returns params whose selected kernels are
``ternary(w, w_pos, w_neg, delta)`` with ``delta = t * max|w|`` per layer (eq. 9,
t = 0.05 by default; delta is a constant for the gradient). Both scales are
learnable leaves trained by the same optimizer as the latent weights.

Scale initialisation: the official code (czhu95/ternarynet) starts both scales
at 1.0, but it first normalises each layer's weights to [-1, 1] by their
maximum. zylax does not rescale the latent weights, so it initialises each
scale to the mean magnitude of the weights beyond the threshold on its side
(TWN's optimal alpha, Li & Liu 2016), which gives the same starting function
as the official recipe up to the normalisation.

First and last layers stay full precision by default (``skip_first_last``),
as in the AlexNet script of the official code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zylax import straight_through as st
from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def _check_t(t: float) -> None:
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold factor t must lie in (0, 1), got {t}")


def ternary_names(params, include: Selector = KERNELS, skip_first_last: bool = True) -> list[str]:
    """The leaves TTQ quantizes: selected kernels, minus first and last by default."""
    names = ztree.selected_names(params, include)
    if skip_first_last:
        names = names[1:-1]
        if not names:
            raise ValueError("with skip_first_last=True, TTQ needs at least three selected "
                             f"layers; selection gives {ztree.selected_names(params, include)}")
    return names


def threshold(w: jax.Array, t: float) -> jax.Array:
    """``delta = t * max|w|`` (no gradient)."""
    return jax.lax.stop_gradient(t * jnp.max(jnp.abs(w)))


def init(params, t: float = 0.05, *, include: Selector = KERNELS,
         skip_first_last: bool = True) -> dict:
    """The latent TTQ model: the params plus per-layer scales (see module docstring)."""
    _check_t(t)
    names = ternary_names(params, include, skip_first_last)
    ztree.check_finite(params, names)
    leaves = ztree.named_leaves(params)
    scales = {}
    for name in names:
        w = leaves[name]
        delta = threshold(w, t)
        pos, neg = w > delta, w < -delta
        w_pos = jnp.sum(jnp.where(pos, w, 0)) / jnp.maximum(jnp.sum(pos), 1)
        w_neg = jnp.sum(jnp.where(neg, -w, 0)) / jnp.maximum(jnp.sum(neg), 1)
        scales[name] = {"w_pos": w_pos.astype(w.dtype), "w_neg": w_neg.astype(w.dtype)}
    return {"params": params, "scales": scales}


def ternarize(latent: dict, t: float = 0.05) -> dict:
    """Params with every scaled leaf replaced by its ternary weights (straight-through)."""
    _check_t(t)
    scales = latent["scales"]
    for name, pair in scales.items():
        for key, value in pair.items():
            if ztree.is_concrete(value) and not float(value) > 0:
                raise ValueError(f"TTQ scale {key} of {name!r} must be positive, got {float(value)}")

    def quantize(name, w):
        if name not in scales:
            return w
        return st.ternary(w, scales[name]["w_pos"], scales[name]["w_neg"], threshold(w, t))
    return ztree.map_named(quantize, latent["params"])
