"""Straight-through estimators: non-differentiable quantizers as ``jax.custom_vjp``.

Each function has an explicit forward and backward rule taken from its paper,
works on any shape under ``jit``, ``grad`` and ``vmap``, and keeps the input's
dtype (float32 or bfloat16).

* ``sign``: BNN deterministic binarization (Courbariaux et al. 2016, eq. 1),
  straight-through gradient cancelled where ``|x| > 1`` (the gradient of Htanh).
* ``stochastic_sign``: BNN stochastic binarization (eq. 2), +1 with probability
  ``hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)``, same gradient as ``sign``.
* ``ternary``: Trained Ternary Quantization (Zhu et al. 2017, eqs. 6-8).
* ``snap``: soft weight-sharing's snap to component means (Ullrich et al. 2017),
  identity gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """``clip((x + 1) / 2, 0, 1)``, the probability of +1 in stochastic binarization."""
    return jnp.clip((x + 1) / 2, 0, 1)


def _htanh_gate(x: jax.Array, g: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(x) <= 1, g, jnp.zeros_like(g))


@jax.custom_vjp
def sign(x: jax.Array) -> jax.Array:
    """Forward ``+1`` where ``x >= 0`` else ``-1`` (dtype of x); backward ``g * 1{|x| <= 1}``."""
    return jnp.where(x >= 0, jnp.ones_like(x), -jnp.ones_like(x))


def _sign_fwd(x):
    return sign(x), x


def _sign_bwd(x, g):
    return (_htanh_gate(x, g),)


sign.defvjp(_sign_fwd, _sign_bwd)


@jax.custom_vjp
def _threshold_sign(x: jax.Array, u: jax.Array) -> jax.Array:
    return jnp.where(u < hard_sigmoid(x), jnp.ones_like(x), -jnp.ones_like(x))


def _threshold_sign_fwd(x, u):
    return _threshold_sign(x, u), (x, u)


def _threshold_sign_bwd(residual, g):
    x, u = residual
    return _htanh_gate(x, g), jnp.zeros_like(u)


_threshold_sign.defvjp(_threshold_sign_fwd, _threshold_sign_bwd)


def stochastic_sign(key: jax.Array, x: jax.Array) -> jax.Array:
    """``+1`` with probability ``hard_sigmoid(x)``, else ``-1``; backward ``g * 1{|x| <= 1}``.

    Args:
      key: a PRNG key; the draw is ``uniform(key, x.shape)``.
      x: array of any shape and float dtype.
    """
    u = jax.random.uniform(key, jnp.shape(x), dtype=jnp.float32).astype(x.dtype)
    return _threshold_sign(x, u)


@jax.custom_vjp
def ternary(w: jax.Array, w_pos: jax.Array, w_neg: jax.Array, delta: jax.Array) -> jax.Array:
    """Trained Ternary Quantization (Zhu et al. 2017, eq. 6).

    Forward: ``w_pos`` where ``w > delta``, ``-w_neg`` where ``w < -delta``, 0 elsewhere
    (``w_pos``, ``w_neg`` positive scalars).

    Backward (eqs. 7-8):
      * ``dL/dw_pos = sum(g over {w > delta})``;
      * ``dL/dw_neg = -sum(g over {w < -delta})``. The paper prints this sum without
        the minus sign; since the forward value there is ``-w_neg``, the exact
        derivative carries it, and that is what is returned here (as autodiff of
        the official code also gives);
      * ``dL/dw = w_pos * g`` above delta, ``g`` inside ``[-delta, delta]``,
        ``w_neg * g`` below ``-delta``;
      * ``delta`` gets no gradient.
    """
    positive, negative = w > delta, w < -delta
    zero = jnp.zeros_like(w)
    return jnp.where(positive, w_pos.astype(w.dtype), jnp.where(negative, -w_neg.astype(w.dtype),
                                                                zero))


def _ternary_fwd(w, w_pos, w_neg, delta):
    return ternary(w, w_pos, w_neg, delta), (w, w_pos, w_neg, delta)


def _ternary_bwd(residual, g):
    w, w_pos, w_neg, delta = residual
    positive, negative = w > delta, w < -delta
    zero = jnp.zeros_like(g)
    grad_w = jnp.where(positive, w_pos.astype(g.dtype) * g,
                       jnp.where(negative, w_neg.astype(g.dtype) * g, g))
    grad_pos = jnp.sum(jnp.where(positive, g, zero)).astype(w_pos.dtype)
    grad_neg = -jnp.sum(jnp.where(negative, g, zero)).astype(w_neg.dtype)
    return grad_w, grad_pos, grad_neg, jnp.zeros_like(delta)


ternary.defvjp(_ternary_fwd, _ternary_bwd)


@jax.custom_vjp
def snap(w: jax.Array, snapped: jax.Array) -> jax.Array:
    """Soft weight-sharing's quantization (Ullrich et al. 2017, section 5): ``snapped`` (each
    weight of ``w`` replaced by its most responsible component's mean) forward; the
    gradient reaches ``w`` unchanged and ``snapped`` none. The paper trains the float weights
    (``methods.soft_share`` does, given an rng); this gradient serves a loop that runs the
    snapped weights."""
    del w
    return snapped


def _snap_fwd(w, snapped):
    return snapped, None


def _snap_bwd(residual, g):
    del residual
    return g, jnp.zeros_like(g)


snap.defvjp(_snap_fwd, _snap_bwd)
