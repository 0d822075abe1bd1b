"""Magnitude pruning (Han et al., "Learning both Weights and Connections", 2015).

Masks are boolean trees with the structure of the params: ``True`` keeps a
weight. Unselected leaves (biases, BatchNorm) get an all-``True`` mask.

* ``han_masks``: keep ``|w| > quality * std(w)`` per layer (LWC section 3).
* ``sparsity_masks``: keep the ``1 - s`` largest magnitudes per layer, or
  ``global_sparsity_masks`` over all selected layers together.
* ``polynomial_sparsity``: Zhu & Gupta's cubic schedule,
  ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / span)^3`` (TF-MOT PolynomialDecay).
* ``prune(inner)``: an optax wrapper that keeps pruned weights exactly zero
  with any inner optimizer; the masks live in its state, so orbax checkpoints
  carry them, and a schedule recomputes them under ``lax.cond`` (no retrace).
  ``keep_zeros(inner)`` reads its masks from the zeros of the params it starts
  from (weights pruned earlier).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def _check_sparsity(name: str, sparsity) -> None:
    if ztree.is_concrete(sparsity) and not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity for {name!r} must lie in [0, 1), got {float(sparsity)}")


def layer_mask(w: jax.Array, sparsity) -> jax.Array:
    """Keeps the ``round((1 - sparsity) * w.size)`` largest ``|w|``; ties by position.

    Works with a traced ``sparsity`` (the count is computed on device).
    """
    magnitude = jnp.abs(w).ravel()
    n = magnitude.size
    ranks = jnp.argsort(jnp.argsort(magnitude, stable=True), stable=True)
    pruned = jnp.round(jnp.asarray(sparsity, jnp.float32) * n).astype(jnp.int32)
    return (ranks >= pruned).reshape(w.shape)


def _check_not_empty(name: str, mask, allow_empty: bool):
    """Refuses a concrete mask that prunes a whole non-empty layer, unless allowed."""
    if not allow_empty and ztree.is_concrete(mask) and np.size(mask) and not np.any(mask):
        raise ValueError(f"{name!r}: these settings prune every one of its {np.size(mask)} "
                         "weights; lower its sparsity or pass allow_empty=True")
    return mask


def _masks(params, include: Selector, make: Callable[[str, jax.Array], jax.Array],
           allow_empty: bool = False):
    names = set(ztree.selected_names(params, include))
    ztree.check_finite(params, sorted(names))
    return ztree.map_named(
        lambda name, w: _check_not_empty(name, make(name, w), allow_empty) if name in names
        else jnp.ones(jnp.shape(w), bool), params)


def han_masks(params, quality: float = 1.0, *, include: Selector = KERNELS,
              overrides: Mapping[str, float] | None = None, allow_empty: bool = False):
    """Han's rule: keep ``|w| > quality * std(w)`` for each selected layer.

    Args:
      params: parameter pytree.
      quality: the "quality parameter" multiplying each layer's weight std.
      include: regex or predicate on leaf names (default: kernels).
      overrides: ``{regex: quality}`` per layer (first match wins).
      allow_empty: allow a layer to lose every weight (otherwise ``ValueError``).

    Returns:
      A boolean tree shaped like ``params``.
    """
    def make(name, w):
        q = ztree.per_leaf_value(name, quality, overrides)
        if not 0 <= q < float("inf"):  # refuses NaN too
            raise ValueError(f"quality for {name!r} must be finite and >= 0, got {q}")
        return jnp.abs(w) > q * jnp.std(w)
    return _masks(params, include, make, allow_empty)


def sparsity_masks(params, sparsity: float = 0.9, *, include: Selector = KERNELS,
                   overrides: Mapping[str, float] | None = None, allow_empty: bool = False):
    """Per-layer target sparsity: each selected layer keeps its ``1 - s`` largest |w|.

    ``overrides`` maps a leaf-name regex to that layer's sparsity. Every
    sparsity must lie in ``[0, 1)``. A sparsity that rounds to the whole of a
    small layer (97% of 15 weights) raises unless ``allow_empty``.
    """
    def make(name, w):
        s = ztree.per_leaf_value(name, sparsity, overrides)
        _check_sparsity(name, s)
        return layer_mask(w, s)
    return _masks(params, include, make, allow_empty)


def global_sparsity_masks(params, sparsity: float, *, include: Selector = KERNELS,
                          allow_empty: bool = False):
    """One magnitude threshold over all selected layers keeping ``1 - sparsity`` of them.

    Raises when a layer would lose every weight, unless ``allow_empty``.
    """
    _check_sparsity("<global>", sparsity)
    names = ztree.selected_names(params, include)
    leaves = ztree.named_leaves(params)
    ztree.check_finite(params, names)
    flat = jnp.concatenate([jnp.ravel(leaves[n]) for n in names])
    keep = layer_mask(flat, sparsity)
    offsets = np.cumsum([0] + [int(np.size(leaves[n])) for n in names])
    per_leaf = {n: _check_not_empty(n, keep[a:b].reshape(jnp.shape(leaves[n])), allow_empty)
                for n, a, b in zip(names, offsets[:-1], offsets[1:])}
    return ztree.map_named(lambda name, w: per_leaf.get(name, jnp.ones(jnp.shape(w), bool)),
                           params)


def apply_masks(params, masks):
    """Zeroes the pruned weights: ``where(mask, w, 0)`` leaf by leaf."""
    ztree.check_same_structure(params, masks, "mask")
    return jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros_like(w)), params, masks)


def kept_fraction(masks) -> dict[str, float]:
    """``{leaf name: fraction of weights kept}``."""
    return {n: float(jnp.mean(m)) for n, m in ztree.named_leaves(masks).items()}


def cubic_progress(step, *, begin_step: int = 0, end_step: int, power: float = 3.0):
    """Fraction of the final sparsity reached at ``step``: ``1 - (1 - p)^power``.

    ``p`` is the progress ``(step - begin_step) / (end_step - begin_step)``
    clipped to [0, 1]. Jittable in ``step``; a ``schedule`` for ``prune``.
    """
    span = max(end_step - begin_step, 1)
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) / span, 0.0, 1.0)
    return 1.0 - (1.0 - progress) ** power


def polynomial_sparsity(step, *, final: float, initial: float = 0.0, begin_step: int = 0,
                        end_step: int, power: float = 3.0):
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) (1 - p)^power``, p = progress in [0, 1].

    Jittable in ``step``; ``initial`` before ``begin_step``, ``final`` after ``end_step``.
    """
    _check_sparsity("<schedule final>", final)
    _check_sparsity("<schedule initial>", initial)
    fraction = cubic_progress(step, begin_step=begin_step, end_step=end_step, power=power)
    return initial + (final - initial) * fraction


class PruneState(NamedTuple):
    """Optimizer state of ``prune``: masks, the inner optimizer's state, a step count."""

    masks: Any
    inner_state: optax.OptState
    count: jax.Array


def prune(inner: optax.GradientTransformation, masks=None, *,
          sparsity: float | None = None, overrides: Mapping[str, float] | None = None,
          schedule: Callable[[jax.Array], jax.Array] | None = None, update_every: int = 100,
          include: Selector = KERNELS) -> optax.GradientTransformation:
    """Wraps ``inner`` so that pruned weights stay exactly zero.

    Two modes:
      * fixed masks: pass ``masks`` (e.g. from ``han_masks``), as in Han's
        retraining;
      * gradual: pass ``sparsity`` (and per-layer ``overrides``); every
        ``update_every`` steps the masks are recomputed from the current
        weights at ``schedule(count) * layer_sparsity`` (``schedule`` returns
        the fraction of the final sparsity reached; default 1, one shot).
        The branch is a ``lax.cond`` on the step count.

    Pruned weights receive no gradient, and their update is ``-w`` so that
    ``optax.apply_updates`` lands on exactly 0 whatever the inner optimizer
    (momentum, Adam, weight decay) proposes.
    """
    if (masks is None) == (sparsity is None):
        raise ValueError("prune needs exactly one of `masks` (fixed) or `sparsity` (gradual)")
    if update_every < 1:
        raise ValueError(f"update_every must be >= 1, got {update_every}")
    schedule = schedule or (lambda count: jnp.float32(1.0))

    def init_fn(params):
        if masks is not None:
            ztree.check_same_structure(params, masks, "mask")
            initial = jax.tree.map(lambda m: jnp.asarray(m, bool), masks)
        else:
            sparsity_masks(params, sparsity, include=include, overrides=overrides)  # validates
            initial = jax.tree.map(lambda w: jnp.ones(jnp.shape(w), bool), params)
        return PruneState(masks=initial, inner_state=inner.init(params),
                          count=jnp.zeros((), jnp.int32))

    def scheduled_masks(params, count):
        fraction = schedule(count)
        names = set(ztree.selected_names(params, include))

        def make(name, w):
            if name not in names:
                return jnp.ones(jnp.shape(w), bool)
            return layer_mask(w, fraction * ztree.per_leaf_value(name, sparsity, overrides))
        return ztree.map_named(make, params)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("prune needs params in update(); call tx.update(g, s, params)")
        updates, inner_state = _masked_inner_update(inner, updates, state, params)
        current = state.masks
        if sparsity is not None:
            candidate = apply_masks(optax.apply_updates(params, updates), state.masks)
            current = jax.lax.cond(state.count % update_every == 0,
                                   lambda: jax.tree.map(jnp.logical_and, state.masks,
                                                        scheduled_masks(candidate, state.count)),
                                   lambda: state.masks)
        return _landing_on_zero(updates, params, current), PruneState(
            masks=current, inner_state=inner_state, count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def keep_zeros(inner: optax.GradientTransformation, min_ndim: int = 0
               ) -> optax.GradientTransformation:
    """``inner`` with the exact zeros of the params it starts from kept exactly zero.

    The masks are read at ``init``: every zero of a leaf with at least
    ``min_ndim`` axes (``min_ndim=2``: matrices and kernels, not biases) is a
    pruned weight. As in ``prune``, pruned weights get no gradient and an
    update of ``-w``, so ``optax.apply_updates`` lands on 0 whatever ``inner``
    proposes.
    """
    def init_fn(params):
        masks = jax.tree.map(lambda w: w != 0 if jnp.ndim(w) >= min_ndim
                             else jnp.ones(jnp.shape(w), bool), params)
        return PruneState(masks=masks, inner_state=inner.init(params),
                          count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("keep_zeros needs params in update(); call tx.update(g, s, params)")
        updates, inner_state = _masked_inner_update(inner, updates, state, params)
        return _landing_on_zero(updates, params, state.masks), state._replace(
            inner_state=inner_state, count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def _masked_inner_update(inner, updates, state: PruneState, params):
    """``inner``'s update of the gradients with the pruned ones zeroed."""
    grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), updates, state.masks)
    return inner.update(grads, state.inner_state, params)


def _landing_on_zero(updates, params, masks):
    """``updates`` where kept, ``-params`` where pruned: the step lands pruned weights on 0."""
    return jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)


def prune_state_masks(opt_state):
    """The masks held by the ``PruneState`` inside an optimizer state."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, PruneState))
             if isinstance(s, PruneState)]
    if not found:
        raise ValueError("the optimizer state holds no PruneState")
    return found[0].masks
