"""Parameter-tree helpers shared by every transform: leaf paths, layer selection, checks.

A leaf is named by its pytree path joined with "/" (``"ip1/kernel"``,
``"features/conv1/kernel"``). Layers are selected by a regular expression
matched against that name (``re.fullmatch``) or by a predicate
``(name, leaf) -> bool``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

KERNELS = r".*kernel"
"""Default selection: weight kernels; biases and BatchNorm scales/means untouched."""

Selector = str | Callable[[str, Any], bool]


def path_name(path) -> str:
    """``(DictKey('ip1'), DictKey('kernel'))`` -> ``"ip1/kernel"``."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def named_leaves(tree) -> dict[str, Any]:
    """Flat ``{path name: leaf}`` in tree order."""
    return {path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def map_named(fn: Callable[[str, Any], Any], tree, *rest):
    """``jax.tree.map`` whose function also receives the leaf's path name."""
    return jax.tree_util.tree_map_with_path(lambda p, *v: fn(path_name(p), *v), tree, *rest)


def selector_fn(include: Selector) -> Callable[[str, Any], bool]:
    """A ``(name, leaf) -> bool`` predicate from a regex or a predicate."""
    if callable(include):
        return include
    pattern = re.compile(include)
    return lambda name, leaf: pattern.fullmatch(name) is not None


def selected_names(params, include: Selector = KERNELS) -> list[str]:
    """Names of the leaves ``include`` selects; raises if it selects none."""
    pick = selector_fn(include)
    names = [name for name, leaf in named_leaves(params).items() if pick(name, leaf)]
    if not names:
        raise ValueError(f"selection {include!r} matches no parameter; leaves are "
                         f"{list(named_leaves(params))}")
    return names


def per_leaf_value(name: str, default: float, overrides: Mapping[str, float] | None) -> float:
    """The value for leaf ``name``: the first override whose regex matches it, else default."""
    for pattern, value in (overrides or {}).items():
        if re.fullmatch(pattern, name):
            return value
    return default


def is_concrete(x) -> bool:
    """True for arrays with values (not tracers inside jit/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(params, names: list[str] | None = None) -> None:
    """Raises ``ValueError`` naming the first leaf holding NaN or Inf (concrete leaves only)."""
    for name, leaf in named_leaves(params).items():
        if names is not None and name not in names:
            continue
        if is_concrete(leaf):
            values = np.asarray(leaf)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                bad = values[~np.isfinite(values)].ravel()[0]
                raise ValueError(f"parameter {name!r} holds a non-finite value ({bad})")


def check_same_structure(params, other, what: str) -> None:
    """Raises ``ValueError`` when ``other`` does not have the leaves and shapes of ``params``."""
    ours, theirs = named_leaves(params), named_leaves(other)
    if list(ours) != list(theirs):
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        raise ValueError(f"{what} tree differs from the params: missing {missing}, "
                         f"unexpected {extra}")
    for name, leaf in ours.items():
        if np.shape(leaf) != np.shape(theirs[name]):
            raise ValueError(f"{what} for {name!r} has shape {np.shape(theirs[name])}, "
                             f"the parameter has {np.shape(leaf)}")


def bit_identical(tree, other) -> bool:
    """True when both trees have the same leaf names and each leaf the same dtype, shape and values.

    Used to check that a decoded file gives back exactly the in-memory model
    (values compared with ``np.array_equal``, so a NaN never matches).
    """
    ours, theirs = named_leaves(tree), named_leaves(other)
    return list(ours) == list(theirs) and all(
        _same_array(np.asarray(leaf), np.asarray(theirs[name])) for name, leaf in ours.items())


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b)
