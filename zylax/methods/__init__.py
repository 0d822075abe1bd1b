"""Compression methods, one interface: ``Method`` (``init``, ``apply``, ``tx``, ``store``).

    from zylax import methods

    chain = [methods.prune(sparsity=0.8), methods.share(bits=5)]   # Deep Compression
    chain = [methods.prune(sparsity=0.5), methods.ternary()]       # pruned TTQ
    chain = [methods.binary(scale=None)]                           # BNN, first and last float
    chain = [methods.combine(methods.pattern(), methods.share())]  # SEP-Net k x k + shared 1 x 1

``compress.run(model, variables, train, test, methods=chain, out=...)`` runs a
chain stage by stage, retraining each with its method's ``tx``. The methods:
``prune``, ``share``, ``soft_share``, ``sparse_vd``, ``ternary``, ``binary``, ``pattern``,
``cast`` (one module each: ``pruning``, ``sharing``, ``soft_sharing``,
``variational_dropout``, ``ttq``, ``bnn``, ``patterns``, ``casting``);
``combine`` runs several on disjoint leaves. A module of this package that
defines ``NAME`` and ``FACTORY`` (its ``Method`` class, called with the
settings) is found when the package is imported, so a new method is one
module, its codec and one test.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Mapping, Sequence

from zylax.methods.base import EXECUTION_ORDER, Combined, Method, State, combine

_FRAMEWORK = ("base",)


def _discover() -> dict[str, Callable[..., Method]]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in _FRAMEWORK:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.NAME] = module.FACTORY
    return found


METHODS: dict[str, Callable[..., Method]] = _discover()
"""``{name: factory}`` of every method (``prune``, ``share``, ...)."""

RECIPES: dict[str, tuple[str, ...]] = {
    "deep": ("prune", "share"),
    "ttq": ("ternary",),
    "bnn": ("binary",),
    "sws": ("soft_share", "share"),
    "svd": ("sparse_vd", "share"),
}
"""Named chains: ``deep`` is Deep Compression (Han et al.); ``ttq`` and ``bnn`` name the
papers' methods; ``sws`` is soft weight-sharing (Ullrich et al.) with the codebooks then
retrained as Han's (``RECIPE_SETTINGS``); ``svd`` is sparse variational dropout (Molchanov
et al.), its kept weights then shared as Han's. Any method name and any ``+``-joined chain works too
(``prune+ttq``, ``pattern+share``)."""

RECIPE_SETTINGS: dict[str, dict[str, dict]] = {
    "sws": {"share": {"bits": 4}},
}
"""Settings a recipe brings, under the ones given to ``build``: ``sws`` shares 4 bits, the 16
non-zero values ``soft_share``'s 17 components leave."""


def get(name: str) -> Callable[..., Method]:
    """The factory of method ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)} or a "
                         f"recipe {sorted(RECIPES)}")
    return METHODS[name]


def chain_names(spec: str) -> list[str]:
    """``"prune+ttq"`` -> ``["prune", "ternary"]``: every method the spec names, recipes
    expanded, each checked."""
    names = []
    for part in spec.replace("&", "+").split("+"):
        part = part.strip()
        names.extend(RECIPES.get(part, (part,)))
    for name in names:
        get(name)
    return names


def build(spec: str | Sequence, settings: Mapping[str, Mapping] | None = None) -> list[Method]:
    """Methods from a spec: ``"deep"``, ``"prune+ttq"``, or ``[(name, {setting: value}), ...]``.

    ``settings`` maps a method name to its settings for a string spec
    (``{"prune": {"sparsity": 0.8}, "share": {"bits": 5}}``). Two consecutive
    names joined by ``&`` are combined on disjoint leaves (``"pattern&share"``).
    """
    settings = dict(settings or {})
    if isinstance(spec, str):
        chain_names(spec)  # every name known
        for part in spec.split("+"):
            for name, values in RECIPE_SETTINGS.get(part.strip(), {}).items():
                settings[name] = {**values, **settings.get(name, {})}
        stages = "+".join("+".join(RECIPES.get(p.strip(), (p.strip(),)))
                          for p in spec.split("+"))
        chain = []
        for part in stages.split("+"):
            group = [get(name.strip())(**settings.get(name.strip(), {}))
                     for name in part.split("&")]
            chain.append(group[0] if len(group) == 1 else combine(*group))
        return chain
    return [get(name)(**dict(values)) for name, values in spec]


def __getattr__(name: str):
    if name in METHODS:
        return METHODS[name]
    raise AttributeError(f"module 'zylax.methods' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *METHODS])


__all__ = ["EXECUTION_ORDER", "Combined", "METHODS", "Method", "RECIPES", "RECIPE_SETTINGS",
           "State", "build",
           "chain_names", "combine", "get", *METHODS]
