"""Trained Ternary Quantization (Zhu, Han, Mao, Dally 2017), one layer at a time.

A layer's latent weights ``w`` run as ``w_pos`` above ``delta = t * max|w|``,
``-w_neg`` below ``-delta`` and 0 between (eq. 6; ``t = 0.05`` in the paper),
through ``zylax.straight_through.ternary`` (eqs. 7-8); ``delta`` is a
constant for the gradient. Every function is traceable in ``t``.

Scale initialisation: the official code (czhu95/ternarynet) starts both
scales at 1.0 after normalising each layer's weights to [-1, 1] by their
maximum. zylax does not rescale the latent weights, so it starts each scale
at the mean magnitude of the weights beyond the threshold on its side (TWN's
optimal alpha, Li & Liu 2016): the same starting function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zylax import straight_through as st


def threshold(w: jax.Array, t) -> jax.Array:
    """``delta = t * max|w|`` (no gradient)."""
    return jax.lax.stop_gradient(t * jnp.max(jnp.abs(w)))


def initial_scales(w: jax.Array, t) -> tuple[jax.Array, jax.Array]:
    """``(w_pos, w_neg)``: the mean magnitude of the weights above ``delta``, and below
    ``-delta``, in ``w``'s dtype (1 for an empty side)."""
    delta = threshold(w, t)
    pos, neg = w > delta, w < -delta
    w_pos = jnp.sum(jnp.where(pos, w, 0)) / jnp.maximum(jnp.sum(pos), 1)
    w_neg = jnp.sum(jnp.where(neg, -w, 0)) / jnp.maximum(jnp.sum(neg), 1)
    return (jnp.where(jnp.any(pos), w_pos, 1).astype(w.dtype),
            jnp.where(jnp.any(neg), w_neg, 1).astype(w.dtype))


def ternarize(w: jax.Array, w_pos, w_neg, t) -> jax.Array:
    """The ternary weights of ``w`` (straight-through): ``w_pos`` / 0 / ``-w_neg``."""
    return st.ternary(w, w_pos, w_neg, threshold(w, t))


def codes(w: jax.Array, t) -> jax.Array:
    """The int8 codes of ``w``: +1 above ``delta``, -1 below ``-delta``, 0 between."""
    delta = threshold(w, t)
    return jnp.where(w > delta, 1, jnp.where(w < -delta, -1, 0)).astype(jnp.int8)
