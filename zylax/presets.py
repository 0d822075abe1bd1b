"""A named compression preset with the user's overrides: what ``zylax compress`` runs.

``override(presets, spec, ...)`` takes a net's presets (``NetSpec.compression``,
data in ``zylax.registry``), picks the one for the chain ``spec`` (or that
chain's method defaults) and applies the settings given, each keyword one
command-line flag. Per-layer values come as ``(bare value or None, {regex:
value})`` from ``per_layer``. Every refusal is a one-line ``ValueError``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from zylax import compress, methods

NOT_PRUNING = ("share", "soft_share", "sparse_vd", "ternary", "binary", "pattern", "cast")
"""The methods whose epochs ``finetune_epochs`` sets (every one but pruning)."""


def per_layer(entries: list[str] | None, convert: Callable[[str], Any],
              check: Callable[[Any], str | None], what: str = "value") -> tuple | None:
    """``["0.9", ".*ip1/kernel=0.95"]`` -> ``(0.9, {".*ip1/kernel": 0.95})``.

    A bare value applies to every other layer; ``REGEX=VALUE`` entries (a
    leaf-path regex) come first, in the order given. ``check(value)``
    returns an error message or None. None without entries. Errors name
    ``what`` (e.g. the flag).
    """
    if entries is None:
        return None
    bare, patterns = [], {}
    for entry in entries:
        pattern, sep, text = entry.rpartition("=")
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"{what}: {entry!r} is neither a number nor REGEX=NUMBER") from None
        problem = check(value)
        if problem:
            raise ValueError(f"{what} {entry!r}: {problem}")
        if not sep:
            bare.append(value)
            continue
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as err:
            raise ValueError(f"{what}: bad regex {pattern!r} ({err})") from None
        patterns[pattern] = value
    if len(bare) > 1:
        raise ValueError(f"{what}: one value for every layer at most, got {bare}")
    return (bare[0] if bare else None), patterns


def _with_layers(what: str, given: tuple, preset, catch_all: str):
    """The preset's setting with ``per_layer``'s result applied: patterns first, then the
    bare value for every other layer, or else the preset's own entries."""
    bare, patterns = given
    if bare is not None:
        return {**patterns, catch_all: bare} if patterns else bare
    if preset is None:
        raise ValueError(f"{what}: give a value for every other layer too (a bare number); "
                         "this model has no preset to keep")
    rest = preset if isinstance(preset, dict) else {catch_all: preset}
    return {**patterns, **{k: v for k, v in rest.items() if k not in patterns}}


def override(presets: Mapping[str, Mapping], spec: str | None = None, *,
             sparsity: tuple | None = None, cycles: int | None = None,
             retrain_epochs: int | None = None, gradual_epochs: int | None = None,
             bits: tuple | None = None, index_bits=None, finetune_epochs: int | None = None,
             keep_float: tuple | None = None, threshold: float | None = None,
             binary_scale: str | None = None, stochastic: bool = False,
             learning_rate: float | None = None, fold_batch_norm: bool | None = None,
             unshared_dtype: str | None = None, kl_weight: float | None = None,
             stage_epochs: Mapping[str, int] | None = None) -> compress.Preset:
    """The ``compress.Preset`` to run: ``presets[spec]`` (``spec`` defaults to the first
    preset, else ``"deep"``), or the chain's method defaults, with every setting given.

    ``sparsity``, ``bits``: ``per_layer`` results; ``cycles``, ``retrain_epochs``,
    ``gradual_epochs`` (cubic pruning over that many epochs): pruning;
    ``index_bits``: sharing; ``finetune_epochs``: every method after pruning;
    ``keep_float``: ternary and binary (``"none"`` entries dropped);
    ``threshold``: TTQ's t; ``binary_scale`` (``"channel"`` or ``"none"``) and
    ``stochastic``: binary; ``kl_weight``: sparse variational dropout;
    ``unshared_dtype`` ``"raw"`` stores other leaves as they are; ``stage_epochs``
    ``{method: epochs}``: each named method's epochs, over ``finetune_epochs`` and
    ``retrain_epochs``. A setting for a method the chain does not run is a ``ValueError``.
    """
    spec = spec or next(iter(presets), "deep")
    names = methods.chain_names(spec)
    preset = compress.Preset(**presets[spec]) if spec in presets else compress.Preset(
        methods=spec)
    settings = {name: dict(preset.settings.get(name, {})) for name in names}
    prune, share = settings.get("prune"), settings.get("share")
    given = {"sparsity": (sparsity, ("prune",)), "cycles": (cycles, ("prune",)),
             "retrain_epochs": (retrain_epochs, ("prune",)),
             "gradual_epochs": (gradual_epochs, ("prune",)), "bits": (bits, ("share",)),
             "index_bits": (index_bits, ("share",)), "threshold": (threshold, ("ternary",)),
             "binary_scale": (binary_scale, ("binary",)),
             "stochastic": (stochastic or None, ("binary",)),
             "keep_float": (keep_float, ("ternary", "binary")),
             "kl_weight": (kl_weight, ("sparse_vd",))}
    for what, (value, targets) in given.items():
        if value is not None and not any(t in settings for t in targets):
            raise ValueError(f"{what} sets {' or '.join(targets)}, which {spec} does not run")
    if prune is not None:
        if sparsity is not None:
            prune["sparsity"] = _with_layers("sparsity", sparsity, prune.get("sparsity", 0.5),
                                             ".*kernel")
        if cycles is not None:
            prune["cycles"] = cycles
        if retrain_epochs is not None:
            prune["epochs"] = retrain_epochs
        if gradual_epochs:
            prune.update(schedule="cubic", cycles=1, epochs=gradual_epochs)
    if share is not None:
        if bits is not None:
            share["bits"] = _with_layers("bits", bits, share.get("bits"), ".*")
        if index_bits is not None:
            share["index_bits"] = index_bits
    for name in names:
        if name in NOT_PRUNING and finetune_epochs is not None:
            settings[name]["epochs"] = finetune_epochs
        if name in ("ternary", "binary") and keep_float is not None:
            settings[name]["keep_float"] = tuple(k for k in keep_float if k != "none")
    if threshold is not None:
        settings["ternary"]["t"] = threshold
    if kl_weight is not None:
        settings["sparse_vd"]["kl_weight"] = kl_weight
    for name, epochs in (stage_epochs or {}).items():
        if name == "cast" and name not in settings and (
                preset.unshared_dtype if unshared_dtype is None else unshared_dtype) not in (
                None, "raw"):
            raise ValueError("stage_epochs: the unshared_dtype cast retrains with the last "
                             "stage; set that stage's epochs")
        if name not in settings:
            raise ValueError(f"stage_epochs names {name}, which {spec} does not run "
                             f"(its stages: {', '.join(names)})")
        settings[name]["epochs"] = epochs
    if "binary" in settings:
        if binary_scale is not None:
            settings["binary"]["scale"] = None if binary_scale == "none" else "channel"
        if stochastic:
            settings["binary"]["stochastic"] = True
    retrain = {**preset.retrain,
               **({"learning_rate": learning_rate} if learning_rate is not None else {})}
    fold = preset.fold_batch_norm if fold_batch_norm is None else fold_batch_norm
    unshared = preset.unshared_dtype if unshared_dtype is None else (
        None if unshared_dtype == "raw" else unshared_dtype)
    return compress.Preset(methods=spec, settings=settings, retrain=retrain,
                           fold_batch_norm=fold, unshared_dtype=unshared)
