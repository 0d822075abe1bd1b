"""Layer execution order of a Flax model, recorded while it runs.

A params tree is a dict whose leaves JAX flattens in sorted key order, so
"the first layer" cannot be read from it: with layers ``stem -> body1 ->
body2 -> head`` the sorted order is body1, body2, head, stem. This module
runs the model once under ``flax.linen.intercept_methods`` and records the
order in which modules are called.
"""

from __future__ import annotations

import flax.linen as nn

from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector


def _call_ranks(model: nn.Module, variables, *args, **kwargs) -> dict[tuple[str, ...], int]:
    """``{module path: rank}`` of the modules a run of the model calls, in first-call order."""
    calls: dict[tuple[str, ...], int] = {}

    def record(next_fun, call_args, call_kwargs, context):
        scope = context.module.scope
        if scope is not None:
            calls.setdefault(tuple(scope.path), len(calls))
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, *args, **kwargs)
    return calls


def _owner(name: str) -> tuple[str, ...]:
    return tuple(name.split("/")[:-1])


def execution_order(model: nn.Module, variables, *args, **kwargs) -> list[str]:
    """Names of the params leaves, ordered by when their module is first called (any method).

    Runs ``model.apply(variables, *args, **kwargs)`` once (shapes only matter;
    pass a one-example batch). Leaves of modules that this run does not call
    come last, in sorted order.
    """
    ranks = _call_ranks(model, variables, *args, **kwargs)
    names = list(ztree.named_leaves(variables["params"]))
    return sorted(names, key=lambda name: ranks.get(_owner(name), len(ranks)))


def first_and_last(model: nn.Module, variables, *args, include: Selector = KERNELS,
                   **kwargs) -> list[str]:
    """The first and last leaves ``include`` selects among the layers a run calls, in call order.

    The usual ``skip`` of TTQ and BNN: the input and output layers stay full precision.
    """
    ranks = _call_ranks(model, variables, *args, **kwargs)
    pick = ztree.selector_fn(include)
    selected = sorted((n for n, leaf in ztree.named_leaves(variables["params"]).items()
                       if pick(n, leaf) and _owner(n) in ranks), key=lambda n: ranks[_owner(n)])
    if not selected:
        raise ValueError(f"selection {include!r} matches no parameter of a layer that runs")
    return sorted({selected[0], selected[-1]}, key=selected.index)
