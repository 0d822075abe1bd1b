"""The Gaussian-mixture prior of soft weight-sharing (Ullrich, Meeds, Welling 2017).

The functions take weights ``u`` in the units the caller chose
(``methods.soft_share``: each layer's weights over its starting standard
deviation, one mixture for all layers). The prior on each ``u_i`` is a
mixture of ``J`` Gaussians (eq. 4)::

    p(u_i) = sum_j pi_j N(u_i | mu_j, 1 / lambda_j)

Component 0 is fixed at ``mu_0 = 0`` with a fixed mixing weight ``pi_0``
(pruning); the others share ``1 - pi_0`` through a softmax of their logits
(``rhos``), and every precision is learned as ``gamma_j = log lambda_j`` under
a Gamma hyper-prior (eq. 6; up to a constant ``-log Gamma(lambda | a, b)`` is
``(1 - a) gamma + b exp(gamma)``), which keeps a variance from collapsing to 0.
After training every weight becomes the mean of its most responsible
component (section 5, "quantization"): ``argmax_j pi_j sqrt(lambda_j)
exp(-lambda_j (u - mu_j)^2 / 2)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Mixture(NamedTuple):
    """Trainable parameters of the prior: ``means (J-1,)`` (component 0 is fixed at
    0), ``log_precisions (J,)`` and ``mixing_logits (J-1,)``, all float32."""

    means: jax.Array
    log_precisions: jax.Array
    mixing_logits: jax.Array


def initial_mixture(u: jax.Array, kept: jax.Array, components: int,
                    initial_std: float) -> Mixture:
    """The start (Ullrich's code): means evenly spaced over the range of the ``kept`` ``u``,
    every component of std ``initial_std``, equal non-zero mixing."""
    big = jnp.finfo(jnp.float32).max
    low = jnp.min(jnp.where(kept, u, big))
    high = jnp.max(jnp.where(kept, u, -big))
    means = jnp.linspace(low, high, components - 1).astype(jnp.float32)
    gammas = jnp.full((components,), -2.0 * math.log(initial_std), jnp.float32)
    return Mixture(means, gammas, jnp.zeros((components - 1,), jnp.float32))


def all_means(mixture: Mixture) -> jax.Array:
    """``(J,)``: 0 for component 0, then the learned means."""
    return jnp.concatenate([jnp.zeros((1,), mixture.means.dtype), mixture.means])


def log_mixing(mixture: Mixture, zero_mixing: float) -> jax.Array:
    """``(J,)`` log mixing weights: ``log pi_0`` fixed, ``log(1 - pi_0) + log_softmax(rhos)``."""
    rest = math.log1p(-zero_mixing) + jax.nn.log_softmax(mixture.mixing_logits)
    return jnp.concatenate([jnp.full((1,), math.log(zero_mixing), rest.dtype), rest])


def log_joint(u: jax.Array, mixture: Mixture, zero_mixing: float) -> jax.Array:
    """``(*u.shape, J)``: ``log pi_j + log N(u | mu_j, 1 / lambda_j)``."""
    gammas = mixture.log_precisions
    squared = jnp.square(u.astype(jnp.float32)[..., None] - all_means(mixture))
    return (log_mixing(mixture, zero_mixing) + 0.5 * gammas - 0.5 * math.log(2 * math.pi)
            - 0.5 * jnp.exp(gammas) * squared)


def negative_log_prior(u: jax.Array, kept: jax.Array, mixture: Mixture,
                       zero_mixing: float) -> jax.Array:
    """``-sum_i log p(u_i)`` over the ``kept`` weights (a scalar)."""
    log_p = jax.nn.logsumexp(log_joint(u, mixture, zero_mixing), axis=-1)
    return -jnp.sum(jnp.where(kept, log_p, 0.0))


def negative_log_hyper_prior(mixture: Mixture, zero_hyper: tuple[float, float],
                             hyper: tuple[float, float]) -> jax.Array:
    """``-sum_j log Gamma(lambda_j | a_j, b_j)`` up to a constant: ``(a, b) = zero_hyper``
    for component 0, ``hyper`` for the others."""
    gammas = mixture.log_precisions
    a = jnp.concatenate([jnp.full((1,), zero_hyper[0]), jnp.full(gammas.shape[0] - 1, hyper[0])])
    b = jnp.concatenate([jnp.full((1,), zero_hyper[1]), jnp.full(gammas.shape[0] - 1, hyper[1])])
    return jnp.sum((1.0 - a) * gammas + b * jnp.exp(gammas))


def assignments(u: jax.Array, mixture: Mixture, zero_mixing: float) -> jax.Array:
    """``u.shape`` int32: each weight's most responsible component (0: pruned)."""
    return jnp.argmax(log_joint(jax.lax.stop_gradient(u), mixture, zero_mixing),
                      axis=-1).astype(jnp.int32)
