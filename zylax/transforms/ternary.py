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

Which layers: the selected kernels minus ``skip``. The paper keeps the first
and last layers full precision; "first" and "last" are in execution order,
which the params tree does not record (its keys are sorted), so pass
``skip=order.first_and_last(model, variables, x)`` (``zylax.transforms.order``)
or name the layers yourself.

Pruned layers compose: ``masks`` (from ``zylax.transforms.pruning``) keep
pruned weights at exactly zero in ``ternarize`` and ``compressed``, where the
``ternary`` codec entropy-codes the zero codes.
"""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from zylax import straight_through as st
from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def _check_t(t: float) -> None:
    if not 0.0 < t < 1.0:  # also refuses NaN
        raise ValueError(f"threshold factor t must lie in (0, 1), got {t}")


def ternary_names(params, include: Selector = KERNELS, skip: Iterable[str] = ()) -> list[str]:
    """The leaves TTQ quantizes: those ``include`` selects, minus ``skip``."""
    names = ztree.selected_names(params, include)
    skip = set(skip)
    unknown = sorted(skip - set(ztree.named_leaves(params)))
    if unknown:
        raise ValueError(f"skip names leaves that are not in the params: {unknown}")
    kept = [n for n in names if n not in skip]
    if not kept:
        raise ValueError(f"TTQ has no layer left: selection {names} minus skip {sorted(skip)}")
    return kept


def threshold(w: jax.Array, t: float) -> jax.Array:
    """``delta = t * max|w|`` (no gradient)."""
    return jax.lax.stop_gradient(t * jnp.max(jnp.abs(w)))


def init(params, t: float = 0.05, *, include: Selector = KERNELS, skip: Iterable[str] = (),
         masks=None) -> dict:
    """The latent TTQ model: the params plus per-layer scales (see module docstring).

    ``masks`` (optional, pruning masks shaped like ``params``) zero the pruned
    weights before the scales are measured.
    """
    _check_t(t)
    names = ternary_names(params, include, skip)
    ztree.check_finite(params, names)
    if masks is not None:
        ztree.check_same_structure(params, masks, "mask")
        params = jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros_like(w)), params, masks)
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


def _check_scales(scales) -> None:
    for name, pair in scales.items():
        for key, value in pair.items():
            if ztree.is_concrete(value) and not float(value) > 0:
                raise ValueError(f"TTQ scale {key} of {name!r} must be positive, got {float(value)}")


def _kept(name: str, masks):
    return None if masks is None else ztree.named_leaves(masks).get(name)


def ternarize(latent: dict, t: float = 0.05, masks=None) -> dict:
    """Params with every scaled leaf replaced by its ternary weights (straight-through).

    With ``masks``, pruned positions of every leaf the masks cover (the float
    first and last layers included) are exactly 0 and get no gradient.
    """
    _check_t(t)
    scales = latent["scales"]
    _check_scales(scales)
    ztree.check_finite(latent["params"], list(scales))

    def quantize(name, w):
        q = st.ternary(w, scales[name]["w_pos"], scales[name]["w_neg"], threshold(w, t)) \
            if name in scales else w
        mask = _kept(name, masks)
        return q if mask is None else jnp.where(mask, q, jnp.zeros_like(q))
    return ztree.map_named(quantize, latent["params"])


def compressed(latent: dict, t: float = 0.05, masks=None) -> dict:
    """The params tree to store: each ternary leaf as a ``codecs.ternary.Ternary`` container.

    Its codes are ``sign(w)`` where ``|w| > delta`` (0 elsewhere and where
    pruned); float leaves keep their values (0 where pruned). It decodes to
    exactly ``ternarize(latent, t, masks)``.
    """
    from zylax.codecs.ternary import Ternary

    _check_t(t)
    scales = latent["scales"]
    _check_scales(scales)

    def make(name, w):
        w = np.asarray(w)
        if name not in scales:
            mask = _kept(name, masks)
            return w if mask is None else np.where(np.asarray(mask), w, np.zeros_like(w))
        delta = np.asarray(threshold(jnp.asarray(w), t))
        codes = np.where(w > delta, 1, np.where(w < -delta, -1, 0)).astype(np.int8)
        mask = _kept(name, masks)
        if mask is not None:
            codes = np.where(np.asarray(mask), codes, 0).astype(np.int8)
        return Ternary(codes, np.asarray(scales[name]["w_pos"]), np.asarray(scales[name]["w_neg"]))
    return ztree.map_named(make, latent["params"])
