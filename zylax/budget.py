"""A byte budget (or an accuracy drop) turned into per-layer settings: Han's choice of each
layer's pruning and sharing from its sensitivity curves (Figure 6), made by a knapsack.

For each kernel the options are: kept float, pruned by magnitude to a sparsity ``s`` of
the sensitivity curves and shared with ``2**b`` k-means values, or, when ``forms`` asks for
them, stored whole by a quantizer of ``sensitivity.FORMS`` (TTQ's ternary, BNN's binary with
a scale per channel).
An option costs the bytes its leaf adds to the file as the archive writes it
(``archive.leaf_bytes`` of the trained layer pruned and shared, its positions coded as Huffman
gaps or an ANS-coded mask, whichever is smaller, or of the quantizer's leaf as it starts: the
codecs' own size model), and is predicted to lose
``drop_prune(s) + drop_share(b)`` points (the two curves of that layer alone with no
retraining, ``zylax.sensitivity``), or the points its form's score loses; negative drops
count as 0. Everything else in the file
(biases, BatchNorm, the header) is a fixed cost, stored as trained (``rest_dtype=None``) or
at two bytes a value (``"float16"``, which also stores the float kernels so).

``allocate`` picks one option per layer: the least summed drop within ``budget`` bytes, or
the fewest bytes within ``max_drop`` points. It is exact up to rounding every cost *up* to
one of ``resolution`` steps (a dynamic programme over the multiple-choice knapsack), so the
plan never exceeds what it was given. ``plan`` measures the curves and the options of a
trained model and allocates; ``Plan.methods()`` is the ``compress.run`` chain that carries
it out (retraining then recovers much of the predicted drop).

    from zylax import budget, compress
    found = budget.plan(model, variables, train_data, budget=20_000, preprocess=prep)
    compress.run(model, variables, train_data, test_data, found.methods(), out="m.zyl")
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zylax import archive, compress, methods, sensitivity, tasks
from zylax import data as zdata
from zylax.containers import Shared
from zylax.methods import combine
from zylax.transforms import tree as ztree
from zylax.transforms.pruning import layer_mask
from zylax.transforms.sharing import index_dtype, kmeans

SPARSITIES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98)
"""The sparsities an option may prune a layer to."""
BITS = (2, 3, 4, 5, 6, 8)
"""The shared-weight bits an option may give a layer."""
REST_DTYPES = (None, "float16")
"""How the leaves no option shares are stored: as trained, or at two bytes a value."""
RESOLUTION = 4000
"""Steps the knapsack's capacity is cut into (costs are rounded up to a step)."""
MARGIN = 0.02
"""The fraction of a byte budget kept free for what retraining changes in the Huffman codes."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One way to store one kernel: pruned to ``sparsity`` and shared with ``2**bits``
    values; or, ``bits`` None, float (``form`` None) or the whole layer as ``form``
    (``"ternary"``, ``"binary"``: ``sensitivity.form_leaf``).

    ``error`` is the relative squared change of the weights, ``|W' - W|^2 / |W|^2``: it
    breaks ties between options of equal predicted drop (the held-out slice is too small to
    tell 4 bits from 6, yet 6 bits changes the layer less).
    """

    sparsity: float
    bits: int | None
    bytes: int
    drop: float
    error: float = 0.0
    form: str | None = None


def _drop(dense: float, score: float) -> float:
    """Points lost (never below 0: a gain on the held-out slice is noise, not a promise; a
    score that is not a number loses everything)."""
    lost = 100.0 * (dense - score)
    return max(0.0, lost) if math.isfinite(lost) else 100.0


def _float_bytes(leaf, rest_dtype: str | None) -> int:
    """``archive.leaf_bytes`` of a float leaf stored as trained or in ``rest_dtype``."""
    leaf = np.asarray(leaf)
    if rest_dtype is not None and np.issubdtype(leaf.dtype, np.floating):
        leaf = leaf.astype(rest_dtype)
    return archive.leaf_bytes(leaf)


def shared_leaf(w, sparsity: float, bits: int, index_bits: str = "ans") -> Shared:
    """``w`` pruned by magnitude to ``sparsity`` (``layer_mask``) and its kept weights shared
    with ``2**bits`` linear-initialised k-means values: what ``prune`` then ``share`` store
    before retraining (positions coded as ``index_bits``: ``"auto"`` or ``"ans"``)."""
    w = jnp.asarray(w)
    found = kmeans(w, bits, mask=layer_mask(w, sparsity))
    return Shared(np.asarray(found.codebook),
                  np.asarray(found.indices).astype(index_dtype(2 ** bits)), index_bits)


def shared_options(w, curves: sensitivity.Sensitivity, name: str, *,
                   sparsities: Sequence[float] = SPARSITIES, bits: Sequence[int] = BITS,
                   index_bits: str = "ans") -> list[Option]:
    """The pruned-and-shared options of leaf ``name`` (``w``, its trained value): each
    (sparsity, bits) pair whose sparsity and bits the curves measured. The kept-float option
    depends on how the rest is stored and is added by ``plan``."""
    options = []
    pruned, shared = curves.sparsity[name], curves.bits[name]
    for s in sparsities:
        if s not in pruned and s != 0.0:
            continue
        for b in bits:
            if b not in shared:
                continue
            drop = (_drop(curves.dense, pruned[s]) if s else 0.0) + _drop(curves.dense,
                                                                           shared[b])
            leaf = shared_leaf(w, s, b, index_bits)
            options.append(Option(float(s), int(b), archive.leaf_bytes(leaf, name), drop,
                                  _relative_error(w, np.append(leaf.codebook, 0.0)[
                                      leaf.indices])))
    return options


def form_options(w, curves: sensitivity.Sensitivity, name: str) -> list[Option]:
    """The options of leaf ``name`` (``w``, its trained value) stored whole by each form the
    curves scored (``Sensitivity.forms``), priced as the form's codec stores its leaf."""
    options = []
    for form, score in curves.forms.get(name, {}).items():
        variant, stored = sensitivity.form_leaf(w, form)
        options.append(Option(0.0, None, archive.leaf_bytes(stored, name),
                              _drop(curves.dense, score), _relative_error(w, variant), form))
    return options


def _relative_error(w, decoded) -> float:
    """``|decoded - w|^2 / |w|^2``."""
    w, decoded = np.asarray(w, np.float64), np.asarray(decoded, np.float64)
    return float(np.sum((decoded - w) ** 2) / max(float(np.sum(w ** 2)), 1e-30))


TIE_WEIGHT = 1e-4
"""Points of predicted drop one unit of ``Option.error`` weighs: less than one held-out
example's worth (1/2,000 of 100 points), so it only orders options of equal drop."""
MAX_RESOLUTION = 1 << 16
"""The most steps ``allocate`` cuts a capacity into (its table is layers x steps)."""


def _check_options(options: Mapping[str, Sequence[Option]]) -> None:
    """Every layer has an option, each with whole non-negative bytes and a finite drop >= 0."""
    for name, found in options.items():
        if not found:
            raise ValueError(f"layer {name!r} has no option")
        for o in found:
            if not (isinstance(o.bytes, (int, np.integer)) and o.bytes >= 0 and
                    math.isfinite(o.drop) and o.drop >= 0 and math.isfinite(o.error)
                    and o.error >= 0):
                raise ValueError(f"layer {name!r}: an option needs bytes >= 0, a finite drop "
                                 f">= 0 and a finite error >= 0, got {o}")


def _knapsack(costs: Sequence[np.ndarray], values: Sequence[np.ndarray], capacity: int
              ) -> list[int] | None:
    """The choice of one item per group with total cost <= ``capacity`` and the least total
    value (dynamic programme, O(groups x items x capacity)); None when nothing fits.
    ``costs`` are non-negative integers."""
    best = np.zeros(capacity + 1)  # least value of the groups so far within cost c
    picks = []
    for cost, value in zip(costs, values):
        new = np.full(capacity + 1, np.inf)
        arg = np.full(capacity + 1, -1)
        for j, (c, v) in enumerate(zip(cost, value)):
            if c > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[c:] = best[:capacity + 1 - c] + v
            better = candidate < new
            new[better], arg[better] = candidate[better], j
        picks.append(arg)
        best = new
    if not np.isfinite(best[capacity]):
        return None
    chosen, c = [], capacity
    for cost, arg in zip(reversed(costs), reversed(picks)):
        j = int(arg[c])
        chosen.append(j)
        c -= int(cost[j])
    return chosen[::-1]


def allocate(options: Mapping[str, Sequence[Option]], *, budget: int | None = None,
             max_drop: float | None = None, fixed_bytes: int = 0,
             resolution: int = RESOLUTION) -> dict[str, Option] | None:
    """One option per layer: the least summed drop with ``fixed_bytes`` + the options' bytes
    <= ``budget``, or the fewest bytes with summed drop <= ``max_drop``; ties go to the least
    summed ``Option.error`` (budget) or the least drop (max_drop). None when no choice fits.

    Costs are rounded up to ``(budget - fixed_bytes) / resolution`` bytes (or ``max_drop /
    resolution`` points), so a returned choice always fits."""
    if (budget is None) == (max_drop is None):
        raise ValueError("give budget or max_drop")
    _check_options(options)
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or \
            not 1 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be an integer in [1, {MAX_RESOLUTION}], got "
                         f"{resolution!r}")
    if not (isinstance(fixed_bytes, (int, np.integer)) and fixed_bytes >= 0):
        raise ValueError(f"fixed_bytes must be a whole number of bytes >= 0, got {fixed_bytes!r}")
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a finite number of bytes, got {budget}")
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise ValueError(f"max_drop must be a finite number of points >= 0, got {max_drop}")
    names = list(options)
    sizes = [np.array([o.bytes for o in options[n]], np.float64) for n in names]
    drops = [np.array([o.drop for o in options[n]], np.float64) for n in names]
    if budget is not None:
        room = budget - fixed_bytes
        if room < 0:
            return None
        step = max(room / resolution, 1.0)
        costs = [np.ceil(s / step).astype(np.int64) for s in sizes]
        capacity = int(room // step)
        errors = [np.array([min(o.error, 1.0) for o in options[n]], np.float64) for n in names]
        values = [d + TIE_WEIGHT * e for d, e in zip(drops, errors)]
    else:
        step = max(max_drop, 1e-9) / resolution
        costs = [np.ceil(d / step - 1e-9).astype(np.int64) for d in drops]
        capacity = resolution
        values = [s + d * 1e-6 for s, d in zip(sizes, drops)]
    chosen = _knapsack(costs, values, capacity)
    if chosen is None:
        return None
    return {n: options[n][j] for n, j in zip(names, chosen)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-layer settings, the methods that apply them, and what they were predicted to cost.

    Attributes:
      choice: ``{kernel path: Option}``.
      rest_dtype: how the leaves left float are stored (None: as trained).
      fixed_bytes: the file's bytes besides the chosen kernels (header, other leaves).
      metric, dense: the task's metric and its value on the held-out slice of the training
        data before compressing (the slice the curves are scored on).
      float16_drop: the held-out points lost by storing every float leaf in float16.
      budget, max_drop: what was asked.
      curves: the sensitivity curves the options were read from.
      index_bits: how the shared kernels' positions are coded (``"auto"``, ``"ans"``).
      forms: the whole-layer quantizers that were offered (``plan``'s ``forms``).
    """

    choice: dict[str, Option]
    rest_dtype: str | None
    fixed_bytes: int
    metric: str
    dense: float
    float16_drop: float
    budget: int | None = None
    max_drop: float | None = None
    curves: sensitivity.Sensitivity | None = dataclasses.field(default=None, repr=False)
    index_bits: str = "ans"
    forms: tuple[str, ...] = ()

    @property
    def predicted_bytes(self) -> int:
        """The file bytes predicted before retraining (fixed plus every chosen option)."""
        return self.fixed_bytes + sum(o.bytes for o in self.choice.values())

    @property
    def predicted_drop(self) -> float:
        """The summed drops of the chosen options (points, no retraining)."""
        rest = self.float16_drop if self.rest_dtype is not None else 0.0
        return rest + sum(o.drop for o in self.choice.values())

    def methods(self, epochs: int = 1) -> list:
        """The ``compress.run`` chain: ``prune`` of the pruned kernels, then one stage of
        ``share`` of the shared ones, ``ternary``/``binary`` of the kernels stored so and a
        ``cast`` of the rest when ``rest_dtype`` (combined: disjoint leaves); each stage
        retrains ``epochs``. Empty when every kernel stays float and the rest as trained."""
        pruned = {n: o.sparsity for n, o in self.choice.items() if o.bits is not None
                  and o.sparsity > 0}
        shared = {n: o.bits for n, o in self.choice.items() if o.bits is not None}
        formed = {form: [n for n, o in self.choice.items() if o.form == form]
                  for form in sensitivity.FORMS}
        chain, last = [], []
        if pruned:
            chain.append(methods.prune(sparsity={re.escape(n): s for n, s in pruned.items()},
                                       include=_exactly(pruned), epochs=epochs))
        if shared:
            last.append(methods.share(bits={re.escape(n): b for n, b in shared.items()},
                                      include=_exactly(shared), epochs=epochs,
                                      index_bits=self.index_bits))
        last += [methods.get(form)(include=_exactly(names), keep_float=(), epochs=epochs)
                 for form, names in formed.items() if names]
        if self.rest_dtype is not None:
            last.append(methods.cast(dtype=self.rest_dtype, epochs=epochs))
        if last:
            chain.append(last[0] if len(last) == 1 else combine(*last))
        return chain

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"budget": self.budget, "max_drop": self.max_drop, "metric": self.metric,
                "dense_held_out": self.dense, "rest_dtype": self.rest_dtype,
                "fixed_bytes": self.fixed_bytes, "float16_drop": self.float16_drop,
                "index_bits": self.index_bits, "forms": list(self.forms),
                "predicted_bytes": self.predicted_bytes, "predicted_drop": self.predicted_drop,
                "layers": {n: dataclasses.asdict(o) for n, o in self.choice.items()}}

    def format_table(self) -> str:
        """A Markdown table: each kernel's setting, bytes and predicted drop."""
        rows = ["| layer | stored as | bytes | predicted drop (points) |", "|---|---|---|---|"]
        for name, o in self.choice.items():
            how = (o.form if o.form is not None else
                   "float" + (f" ({self.rest_dtype})" if self.rest_dtype else "")
                   if o.bits is None else
                   f"{'pruned %g%%, ' % (100 * o.sparsity) if o.sparsity else ''}{o.bits} bits")
            rows.append(f"| {name} | {how} | {o.bytes:,} | {o.drop:.2f} |")
        rows.append(f"| everything else ({self.rest_dtype or 'as trained'}) | | "
                    f"{self.fixed_bytes:,} | "
                    f"{self.float16_drop if self.rest_dtype else 0.0:.2f} |")
        rows.append(f"| **predicted file** | | **{self.predicted_bytes:,}** | "
                    f"**{self.predicted_drop:.2f}** |")
        if self.forms:
            chosen = [n for n, o in self.choice.items() if o.form is not None]
            rows.append(f"\nwhole-layer forms offered: {', '.join(self.forms)}; chosen for "
                        f"{', '.join(chosen) if chosen else 'no layer'}")
        return "\n".join(rows)


def _exactly(names) -> str:
    """A regex matching exactly these leaf paths."""
    return "|".join(re.escape(n) for n in names)


def _fixed_bytes(variables, chosen: set[str], rest_dtype: str | None, metadata: dict) -> int:
    """Bytes of the file besides the ``chosen`` kernels: every other leaf of every collection
    (``rest_dtype``) and the framing and compressed header of a file with ``metadata``."""
    rest = {}
    for collection, tree in variables.items():
        for name, leaf in ztree.named_leaves(tree).items():
            if not (collection == "params" and name in chosen):
                rest[f"{collection}/{name}"] = leaf
    leaves = sum(_float_bytes(leaf, rest_dtype) for leaf in rest.values())
    probe = {"params": {"x": np.zeros(1, np.float32)}}
    framing = len(archive.to_bytes(probe, metadata=metadata)) - archive.leaf_bytes(
        np.zeros(1, np.float32))
    return leaves + framing


def _float16_drop(model, variables, data, task, preprocess) -> tuple[float, float]:
    """``(dense, drop)``: the held-out metric as trained, and the points lost with every float
    leaf rounded to float16."""
    def rounded(x):
        x = np.asarray(x)
        return x.astype(np.float16).astype(x.dtype) if np.issubdtype(x.dtype, np.floating) \
            else x
    images, labels = data
    dense = task.evaluate(model, variables, images, labels, preprocess=preprocess)[task.metric]
    half = task.evaluate(model, jax.tree.map(rounded, dict(variables)), images, labels,
                         preprocess=preprocess)[task.metric]
    return float(dense), _drop(dense, half)


def plan(model, variables: Mapping[str, Any], train_data, *, budget: int | None = None,
         max_drop: float | None = None, preprocess=None, task=None,
         include: str = ztree.KERNELS, sparsities: Sequence[float] = SPARSITIES,
         bits: Sequence[int] = BITS, metadata: dict | None = None,
         train_flag: str | None = None, curves: sensitivity.Sensitivity | None = None,
         margin: float = MARGIN, index_bits: str = "ans", forms: Sequence[str] = ()) -> Plan:
    """Measures the sensitivity curves and the options of every kernel ``include`` selects and
    allocates them to ``budget`` file bytes (less ``margin`` of it) or ``max_drop`` points.

    Args:
      model, variables: a trained Flax module and its variables (every collection).
      train_data: ``(images, labels)`` of the training split; the curves are scored on its
        held-out slice (``sensitivity.held_out``), never on the test set.
      budget: the most bytes of the written file.
      max_drop: the most points of the task's metric lost (predicted, before retraining).
      preprocess, task, include, train_flag: as ``sensitivity.sensitivity``.
      sparsities, bits: the settings an option may take.
      forms: whole-layer quantizers an option may also store a kernel with (of
        ``sensitivity.FORMS``); none by default: their drop before retraining is closer to
        what retraining leaves than pruning's is, so the knapsack, comparing drops before
        retraining, prefers them where pruning would end more accurate (RESULTS.md,
        "Budget in, model out": LeNet-300-100's 40,000-byte file, ip1 binary, lost 2.08
        points; pruned and shared, 0.95).
      metadata: what the written file records (its header counts as a fixed cost).
      curves: measured ``Sensitivity`` to reuse (it must cover ``include``; the forms it
        did not score are not offered).
      margin: the fraction of ``budget`` kept free for what retraining changes.
      index_bits: how shared kernels code their positions: ``"ans"`` (Huffman-coded gaps of
        the best width or an ANS-coded mask, the smaller per layer; the default) or
        ``"auto"`` (the gaps only, Deep Compression's coding; ``zylax.codecs.shared``). The
        options are priced, and the file written, so.

    Returns:
      The ``Plan`` with the least predicted drop (or the fewest bytes) of both ways of
      storing the rest (``REST_DTYPES``). Raises ``ValueError`` when nothing fits (even
      every kernel at its smallest option with the rest in float16 is over the budget;
      checked first against what the kernels leave, before any curve is measured), and
      when the best plan compresses nothing (the model as trained fits the budget).
    """
    if (budget is None) == (max_drop is None):
        raise ValueError("give budget or max_drop")
    if budget is not None and (isinstance(budget, (bool, np.bool_)) or not (
            isinstance(budget, (int, np.integer)) and budget > 0)):
        raise ValueError(f"budget must be a positive whole number of bytes, got {budget!r}")
    if max_drop is not None and (isinstance(max_drop, (bool, np.bool_))
                                 or not 0 <= max_drop <= 100):  # NaN fails too
        raise ValueError(f"max_drop must lie in [0, 100] points, got {max_drop!r}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must lie in [0, 0.5), got {margin}")
    if index_bits not in ("auto", "ans"):
        raise ValueError(f"index_bits must be 'auto' or 'ans', got {index_bits!r}")
    if not sparsities or any(not 0 <= s < 1 for s in sparsities):
        raise ValueError(f"sparsities must be values in [0, 1), got {tuple(sparsities)}")
    if not bits or any(isinstance(b, bool) or not isinstance(b, (int, np.integer))
                       or not 1 <= b <= 16 for b in bits):
        raise ValueError(f"bits must be values in [1, 16], got {tuple(bits)}")
    if set(forms) - set(sensitivity.FORMS):
        raise ValueError(f"forms may hold {sensitivity.FORMS}, got {tuple(forms)}")
    if not np.shape(train_data[0])[0]:
        raise ValueError("train_data holds no example")
    task = tasks.Classification() if task is None else task
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    try:
        selected = ztree.selected_names(variables["params"], include)
    except (re.error, OverflowError, RecursionError) as err:
        raise ValueError(f"include: bad regex {include!r} ({err})") from None
    kernels = ztree.named_leaves(variables["params"])
    selected = [name for name in selected if np.ndim(kernels[name]) >= 2]  # as the curves
    floor = _fixed_bytes(variables, set(selected), "float16", dict(metadata or {}))
    if budget is not None and budget * (1 - margin) < floor:
        raise ValueError(f"no setting fits {budget:,} bytes: what the kernels leave (biases, "
                         f"statistics, the header) takes {floor:,} bytes in float16 alone")
    if curves is None:
        curves = sensitivity.sensitivity(model, variables, train_data, preprocess=preprocess,
                                         task=task, include=include,
                                         sparsities=sorted({0.0, *sparsities}), bits=bits,
                                         train_flag=train_flag, forms=forms)
    dense, half_drop = _float16_drop(model, variables, sensitivity.held_out(train_data), task,
                                     preprocess)
    params = ztree.named_leaves(variables["params"])
    plans, smallest = [], []
    compressed = {name: shared_options(params[name], curves, name, sparsities=sparsities,
                                       bits=bits, index_bits=index_bits)
                  + [o for o in form_options(params[name], curves, name) if o.form in forms]
                  for name in curves.weights}
    for rest_dtype in REST_DTYPES:
        options = {name: [Option(0.0, None, _float_bytes(params[name], rest_dtype), 0.0),
                          *found] for name, found in compressed.items()}
        fixed = _fixed_bytes(variables, set(options), rest_dtype, dict(metadata or {}))
        smallest.append(fixed + sum(min(o.bytes for o in opts) for opts in options.values()))
        extra = half_drop if rest_dtype is not None else 0.0
        goal = (dict(budget=int(math.floor(budget * (1 - margin))))
                if budget is not None else dict(max_drop=max_drop - extra))
        if goal.get("max_drop", 0.0) < 0:
            continue
        choice = allocate(options, fixed_bytes=fixed, **goal)
        if choice is not None:
            plans.append(Plan(choice, rest_dtype, fixed, curves.metric, dense, half_drop,
                              budget, max_drop, curves, index_bits,
                              tuple(f for f in dict.fromkeys(forms) if any(
                                  f in c for c in curves.forms.values()))))
    if not plans:
        raise ValueError(f"no setting fits {budget:,} bytes: the smallest file these options "
                         f"make is {min(smallest):,} bytes (before the {margin:.0%} margin)"
                         if budget is not None else
                         f"no setting stays within {max_drop} points")
    key = ((lambda p: (round(p.predicted_drop, 6), p.predicted_bytes)) if budget is not None
           else (lambda p: (p.predicted_bytes, p.predicted_drop)))
    best = min(plans, key=key)
    if not best.methods():
        raise ValueError(f"the model as trained ({best.predicted_bytes:,} bytes) already fits "
                         f"{budget:,} bytes: nothing to compress" if budget is not None else
                         f"no compression of the model is predicted to lose at most {max_drop} "
                         "points")
    return best


def run(model, variables: Mapping[str, Any], train_data, test_data, *, out: str,
        budget: int | None = None, max_drop: float | None = None, epochs: int = 1,
        preprocess=None, task=None, retrain: compress.Retrain = compress.Retrain(),
        metadata: Mapping | None = None, curves: sensitivity.Sensitivity | None = None,
        tries: int = 2, index_bits: str = "ans", forms: Sequence[str] = (), **run_kwargs):
    """``plan``, then ``compress.run`` of ``Plan.methods(epochs)`` writing ``out``.

    Retraining moves the weights, and so the Huffman codes of the shared
    indices: when the written file is over ``budget`` all the same, the plan
    is made again for ``budget`` scaled by budget / written (same curves) and
    run again, ``tries`` runs at most; a file still over is a ``RuntimeError``.
    ``curves`` reuses measured sensitivity curves (``Plan.curves``), e.g. across
    budgets; ``index_bits`` and ``forms`` are ``plan``'s. Other keyword arguments go to
    ``compress.run``.

    Returns:
      ``(Plan, compress.Result)``; ``result.report["budget"]`` holds the plan
      (``Plan.to_dict``) with the written bytes and the measured drop.
    """
    if isinstance(tries, bool) or not isinstance(tries, (int, np.integer)) or tries < 1:
        raise ValueError(f"tries must be a positive integer, got {tries!r}")
    task = tasks.Classification(retrain.label_smoothing) if task is None else task
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    extra = dict(metadata or {})
    if "net" not in extra and "model" not in extra:
        extra.update(compress.model_hint(model))
    recorded = tasks.file_metadata(task, preprocess, *train_data, extra)  # what run records
    target, written = budget, 0
    for attempt in range(tries):
        try:
            found = plan(model, variables, train_data, budget=target, max_drop=max_drop,
                         preprocess=preprocess, task=task, metadata=recorded,
                         train_flag=retrain.train_flag, curves=curves, index_bits=index_bits,
                         forms=forms)
        except ValueError as err:
            if not attempt:
                raise
            os.remove(out)
            raise RuntimeError(f"the file was {written:,} bytes, over the budget of "
                               f"{budget:,}, and no smaller plan is left ({err}); "
                               "nothing was kept") from None
        curves = found.curves
        try:
            result = compress.run(model, variables, train_data, test_data,
                                  found.methods(epochs), out=out, preprocess=preprocess,
                                  task=task, retrain=retrain, metadata=metadata, **run_kwargs)
        except BaseException:
            if attempt:  # the file on disk is the earlier one, over the budget
                os.remove(out)
            raise
        written = result.report["file_bytes"]
        if budget is None or written <= budget:
            break
        target = int(target * budget / written)
    else:
        os.remove(out)
        raise RuntimeError(f"the file was {written:,} bytes, over the budget of {budget:,} "
                           f"after {tries} plans; nothing was kept (give a smaller budget)")
    result.report["budget"] = {**found.to_dict(), "written_bytes": written,
                               "measured_drop": round(100.0 * (
                                   result.report["dense_accuracy"]
                                   - result.report["compressed_accuracy"]), 4)}
    return found, result
