"""Binarized Neural Networks (Courbariaux, Hubara et al. 2016): binary weights.

The latent weights stay real and are trained; the model sees
``sign(latent)`` (through the straight-through ``zylax.straight_through.sign``;
``zylax.methods.binary`` applies it), and after every update the latent
weights are clipped to ``[-1, 1]`` (``clip_latent``), which is what keeps the
straight-through gradient alive. Binary activations are a net argument
(``activation=binary_activation``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from zylax import straight_through as st
from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def clip_latent(include: Selector = KERNELS, bound: float = 1.0) -> optax.GradientTransformation:
    """Projects the selected latent weights onto ``[-bound, bound]`` after each update.

    Chain it last: ``optax.chain(optax.adam(lr), clip_latent())``. Its update is
    ``clip(w + u) - w``, so ``optax.apply_updates`` lands inside the box.
    """
    if not 0 < bound < float("inf"):  # refuses NaN too
        raise ValueError(f"bound must be positive and finite, got {bound}")

    def init_fn(params):
        ztree.selected_names(params, include)  # fail early on an empty selection
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_latent needs params in update()")
        names = set(ztree.selected_names(params, include))

        def project(name, u, w):
            if name not in names:
                return u
            return jnp.clip(w + u, -bound, bound) - w
        return ztree.map_named(project, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def binary_activation(x: jax.Array) -> jax.Array:
    """Deterministic binary activation ``sign(x)`` with the Htanh straight-through gradient."""
    return st.sign(x)


def stochastic_binary_activation(module_rng: jax.Array, x: jax.Array) -> jax.Array:
    """Stochastic binary activation; ``module_rng`` is a PRNG key."""
    return st.stochastic_sign(module_rng, x)
