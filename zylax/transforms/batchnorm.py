"""Folding BatchNorm's moving statistics into its scale and bias, for inference.

In inference mode ``nn.BatchNorm`` computes, per channel,

    y = (x - mean) / sqrt(var + eps) * scale + bias.

With ``a = scale / sqrt(var + eps)`` and ``b = bias - mean * a`` this is
``y = x * a + b``: the same layer with scale ``a``, bias ``b``, mean 0 and
variance ``1 - eps`` (so that ``sqrt(var + eps) = 1``). Four vectors a
channel become two, and the two constant ones store as one value each
(``codecs.constant``). The folded variables are for inference: training the
model on would restart from these statistics.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zylax.containers import Cast


def batch_norm_layers(model: nn.Module, variables, *args, **kwargs) -> dict[tuple, float]:
    """``{module path: epsilon}`` of the ``nn.BatchNorm`` layers a run of the model calls.

    Runs ``model.apply(variables, *args, **kwargs)`` once in inference mode
    (pass a one-example batch); any BatchNorm subclass counts.
    """
    found: dict[tuple, float] = {}

    def record(next_fun, call_args, call_kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and module.scope is not None:
            found[tuple(module.scope.path)] = float(module.epsilon)
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, *args, **kwargs)
    return found


def _at(tree, path):
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _replace(tree: dict, path: tuple, leaves: dict) -> dict:
    """``tree`` with the dict at ``path`` updated by ``leaves`` (copies along the path only)."""
    if not path:
        return {**tree, **leaves}
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], leaves)}


def fold_layer(scale, bias, mean, var, epsilon: float) -> dict:
    """One BatchNorm folded: ``{"scale": a, "bias": b, "mean": 0, "var": 1 - eps}`` (see
    the module docstring), each in its input's dtype."""
    a = scale / jnp.sqrt(var.astype(jnp.float32) + epsilon).astype(scale.dtype)
    b = bias - mean.astype(bias.dtype) * a
    return {"scale": a, "bias": b.astype(bias.dtype), "mean": jnp.zeros_like(mean),
            "var": jnp.full_like(var, 1.0 - epsilon)}


def fold(variables, layers: Mapping[tuple, float]) -> dict:
    """``variables`` with the BatchNorm layers ``layers`` (``{module path: epsilon}``, from
    ``batch_norm_layers``) folded, for inference.

    Replaces ``params/<layer>/{scale, bias}`` and ``batch_stats/<layer>/{mean,
    var}`` by ``fold_layer``'s; the model computes the same function (to float
    rounding) in inference mode. A leaf stored narrow (``containers.Cast``) is
    folded from its values and stays narrow; the folded statistics are plain
    arrays (one value each). Layers built with ``use_scale=False`` or
    ``use_bias=False`` have nowhere to put ``a`` or ``b`` and stay as they
    are, as does every other leaf (quantized kernels included). Returns
    plain dicts.
    """
    params, stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
    for path, epsilon in sorted(layers.items()):
        p, s = _at(params, path), _at(stats, path)
        if not (isinstance(p, Mapping) and isinstance(s, Mapping) and
                {"scale", "bias"} <= p.keys() and {"mean", "var"} <= s.keys()):
            continue
        new = fold_layer(*(_values(x) for x in (p["scale"], p["bias"], s["mean"], s["var"])),
                         epsilon)
        params = _replace(params, path, {"scale": _like(p["scale"], new["scale"]),
                                         "bias": _like(p["bias"], new["bias"])})
        stats = _replace(stats, path, {"mean": new["mean"], "var": new["var"]})
    return jax.device_get({**variables, "params": params, "batch_stats": stats})


def _values(leaf):
    """The float array a leaf holds (a ``Cast`` container's values)."""
    return jnp.asarray(leaf.values if isinstance(leaf, Cast) else leaf)


def _like(leaf, value):
    """``value`` stored as ``leaf`` is: narrow again when ``leaf`` is a ``Cast``."""
    value = np.asarray(value)
    return Cast(value, leaf.stored) if isinstance(leaf, Cast) else value
