"""Binarized Neural Networks (Courbariaux, Hubara et al. 2016): binary weights.

The latent weights stay real and are trained; the model sees
``sign(latent)`` (through the straight-through ``zylax.straight_through.sign``),
and after every update the latent weights are clipped to ``[-1, 1]``
(``clip_latent``), which is what keeps the straight-through gradient alive.
Binary activations are a net argument (``activation=binary_activation``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax import straight_through as st
from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def binarize(params, include: Selector = KERNELS, masks=None):
    """Replaces each selected leaf ``W`` by ``sign(W)`` (straight-through), others untouched.

    Shapes and dtypes are preserved; raises if ``include`` selects nothing.
    A pruned layer keeps its zeros when its ``masks`` (from
    ``zylax.transforms.pruning``) are given; without them, a concrete layer
    holding exact zeros is refused, since ``sign(0) = +1`` would silently turn
    every pruned weight into a +1.
    """
    names = set(ztree.selected_names(params, include))
    ztree.check_finite(params, sorted(names))
    mask_of = {} if masks is None else ztree.named_leaves(masks)

    def make(name, w):
        if name not in names:
            return w
        if name in mask_of:
            return jnp.where(mask_of[name], st.sign(w), jnp.zeros_like(w))
        if ztree.is_concrete(w) and np.any(np.asarray(w) == 0):
            raise ValueError(f"binarize: {name!r} holds {int(np.sum(np.asarray(w) == 0))} exact "
                             "zeros (a pruned layer?); pass its masks to keep them")
        return st.sign(w)
    return ztree.map_named(make, params)


def compressed(params, include: Selector = KERNELS, masks=None):
    """The params tree to store: each selected leaf as 1-bit signs (``codecs.binary.Binary``).

    The scale is 1 (BNN). A pruned leaf (``masks``) is stored as a
    ``codecs.ternary.Ternary`` with both scales 1, so its zeros survive.
    Decodes to exactly ``binarize(params, include, masks)``.
    """
    from zylax.codecs.binary import Binary
    from zylax.codecs.ternary import Ternary

    binary = binarize(params, include, masks)
    names = set(ztree.selected_names(params, include))
    mask_of = {} if masks is None else ztree.named_leaves(masks)

    def make(name, b):
        b = np.asarray(b)
        if name not in names:
            return b
        one = np.ones((), b.dtype)
        if name in mask_of:
            return Ternary(b.astype(np.int8), one, one)
        return Binary(b.astype(np.int8), one)
    return ztree.map_named(make, binary)


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
