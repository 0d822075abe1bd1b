"""Per-layer sensitivity to pruning and to weight sharing (Han et al. 2015, Figure 6).

For each selected layer alone, with every other layer as trained and no
retraining: the task's metric after pruning that layer to each sparsity (by
magnitude, ``transforms.pruning.layer_mask``) and after sharing it with
``2**bits`` k-means centroids (``transforms.sharing.kmeans``, linear
initialisation). Han chose his per-layer thresholds from such curves; the
curves are measured on a held-out slice of the *training* data
(``held_out``), never on the test set, so choosing settings from them does
not tune to the test set.

Classification scores every setting of a layer in one jitted call that maps
the model over the stacked variants of that layer (``jax.vmap``), in groups
of ``settings_per_call`` when memory is short; other tasks score each variant
with ``task.evaluate``.

    from zylax import sensitivity
    found = sensitivity.sensitivity(model, variables, train_data, preprocess=prep)
    print(found.format_table()); found.plot().savefig("sensitivity.png")
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zylax import data as zdata
from zylax import archive, methods, tasks, train
from zylax.transforms import tree as ztree
from zylax.transforms.pruning import layer_mask
from zylax.transforms.sharing import kmeans

SPARSITIES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The sparsities of each layer's pruning curve (0.0 is the dense model)."""
BITS = (1, 2, 3, 4, 5, 6, 8)
"""The bits (``2**bits`` shared values) of each layer's sharing curve."""
FORMS = ("ternary", "binary")
"""Whole-layer quantizers a layer may also be scored as (``forms``): TTQ's ternary and BNN's
binary with a scale per output channel, each as its method starts (``form_leaf``)."""
FORM_BITS = {"ternary": math.log2(3), "binary": 1.0}
"""Where ``Sensitivity.plot`` draws each form on its bits axis."""
HELD_OUT = 0.1
"""The fraction of the training data scored (its last examples), at most ``MAX_HELD_OUT``."""
MAX_HELD_OUT = 2000


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """The curves of every selected layer.

    Attributes:
      metric: the task's metric (``accuracy``, ``AP50``, ``mIoU``).
      dense: its value for the model as given.
      sparsity: ``{layer: {sparsity: metric}}``.
      bits: ``{layer: {bits: metric}}``.
      weights: ``{layer: number of weights}``.
      examples: the held-out examples scored.
      forms: ``{layer: {form: metric}}`` of the ``FORMS`` asked for (``form_leaf``).
    """

    metric: str
    dense: float
    sparsity: dict[str, dict[float, float]]
    bits: dict[str, dict[int, float]]
    weights: dict[str, int]
    examples: int
    forms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready (setting keys as strings)."""
        return {"metric": self.metric, "dense": self.dense, "examples": self.examples,
                "weights": self.weights,
                "sparsity": {k: {f"{s:g}": v for s, v in c.items()}
                             for k, c in self.sparsity.items()},
                "bits": {k: {str(b): v for b, v in c.items()} for k, c in self.bits.items()},
                "forms": self.forms}

    def write(self, json_path: str) -> None:
        """Writes the curves as JSON (atomically)."""
        archive.write_atomic(json_path, json.dumps(self.to_dict(), indent=1,
                                                   sort_keys=True).encode())

    def format_table(self) -> str:
        """Markdown: one row per layer, the metric's change in points at each setting."""
        sparsities = sorted({s for c in self.sparsity.values() for s in c})
        bits = sorted({b for c in self.bits.values() for b in c})
        forms = [f for f in FORMS if any(f in c for c in self.forms.values())]
        head = [f"pruned {s:g}" for s in sparsities] + [f"{b} bits" for b in bits] + forms
        lines = [f"{self.metric} {100 * self.dense:.2f}% dense, {self.examples:,} held-out "
                 "training examples; change in points, one layer at a time:", "",
                 "| layer | weights | " + " | ".join(head) + " |",
                 "|---|---|" + "---|" * len(head)]
        for name in self.weights:
            cells = [self.sparsity.get(name, {}).get(s) for s in sparsities] + \
                    [self.bits.get(name, {}).get(b) for b in bits] + \
                    [self.forms.get(name, {}).get(f) for f in forms]
            shown = ["" if v is None else f"{100 * (v - self.dense):+.2f}" for v in cells]
            lines.append(f"| {name} | {self.weights[name]:,} | " + " | ".join(shown) + " |")
        return "\n".join(lines) + "\n"

    def plot(self):
        """Han's Figure 6: the metric against sparsity, and against bits, one line a layer;
        returns the matplotlib figure."""
        from matplotlib.figure import Figure  # plotting only when a figure is drawn

        fig = Figure(figsize=(11, 4), layout="tight")
        left, right = fig.subplots(1, 2)
        for name, curve in self.sparsity.items():
            left.plot([100 * s for s in curve], [100 * v for v in curve.values()], "o-",
                      label=name, markersize=3)
        for name, curve in self.bits.items():
            line, = right.plot(list(curve), [100 * v for v in curve.values()], "o-",
                               label=name, markersize=3)
            for form, value in self.forms.get(name, {}).items():
                right.plot(FORM_BITS[form], 100 * value, "^" if form == "ternary" else "s",
                           color=line.get_color(), markersize=5)
        left.set_xlabel("% of the layer's weights pruned")
        right.set_xlabel("bits per shared weight (triangle: ternary, square: binary)"
                         if self.forms else "bits per shared weight")
        for ax in (left, right):
            ax.axhline(100 * self.dense, color="gray", linestyle=":", linewidth=1)
            ax.set_ylabel(f"{self.metric} (%)")
        left.legend(fontsize=7)
        return fig


def held_out(train_data, fraction: float = HELD_OUT, limit: int = MAX_HELD_OUT):
    """The last ``fraction`` of ``train_data`` (at most ``limit`` examples): what sensitivity
    is scored on, so that the test set is never used to choose settings (``compress.run``
    sweeps its learning rate on the same slice). When the model was trained on those
    examples too, the curves start from its training accuracy; for curves on unseen data,
    train on all but the last tenth of the split you pass."""
    images, labels = train_data
    n = images.shape[0]
    held = max(1, min(limit, int(math.ceil(n * fraction))))
    rows = np.arange(n - held, n)
    return images[rows], zdata.take(labels, rows)


def _pruned(w, sparsities):
    """``(S, *w.shape)``: ``w`` pruned by magnitude to each sparsity."""
    return jax.vmap(lambda s: w * layer_mask(w, s).astype(w.dtype))(
        jnp.asarray(sparsities, jnp.float32))


def _shared(w, bits: Sequence[int]):
    """``(B, *w.shape)``: ``w`` shared by k-means with ``2**b`` values, for each ``b``."""
    variants = []
    for b in bits:
        found = kmeans(w, b)
        variants.append(found.codebook[found.indices].astype(w.dtype))
    return jnp.stack(variants)


def form_leaf(w, form: str):
    """``(variant, stored)``: kernel ``w`` as method ``form`` (one of ``FORMS``) starts,
    before any training, on this layer alone: the array the model runs (``apply``) and the
    codec leaf it would be stored as (``store``). Ternary (TTQ, eq. 6): ``+w_p`` above
    ``0.05 max|w|``, ``-w_n`` below its negative, 0 between, the scales the mean magnitudes
    beyond; binary: ``sign(w)`` times each output channel's mean ``|w|``."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    method = methods.get(form)(keep_float=())
    latent, own, aux = method.init_leaves({"w": jnp.asarray(w)}, jax.random.key(0))
    return (method.apply_leaves(latent, own, aux)["w"],
            method.store_leaves(latent, own, aux)["w"])


def _correct_counts(model, collections, name: str, train_flag: str | None):
    """Jitted ``(params, variants, x, y, mask) -> (S,)`` correct predictions of the model with
    leaf ``name`` replaced by each variant."""
    @jax.jit
    def counts(params, variants, x, y, mask):
        def one(leaf):
            swapped = ztree.map_named(lambda n, old: leaf if n == name else old, params)
            logits = train.forward(model, swapped, collections, x, train=False,
                                   train_flag=train_flag)[0]
            return jnp.sum((jnp.argmax(logits, -1) == y) * mask)
        return jax.vmap(one)(variants)
    return counts


def _scores(model, variables, name, variants, data, task, preprocess, batch_size,
            settings_per_call, train_flag) -> list[float]:
    """The task's metric with leaf ``name`` replaced by each of ``variants``."""
    params, collections = train.split_variables(variables)
    images, labels = data
    if task.name != "classification":
        found = []
        for leaf in variants:
            swapped = {**variables, "params": ztree.map_named(
                lambda n, old: leaf if n == name else old, params)}
            found.append(task.evaluate(model, swapped, images, labels,
                                       preprocess=preprocess)[task.metric])
        return found
    counts = _correct_counts(model, collections, name, train_flag)
    batch_size = max(1, tasks.scoring_batch_size(task, model, variables, images, preprocess,
                                                 batch_size) // settings_per_call)
    total = np.zeros(len(variants), np.int64)
    for batch in zdata.batches(images, labels, batch_size, preprocess=preprocess,
                               shuffle=False, remainder="pad"):
        for start in range(0, len(variants), settings_per_call):
            group = variants[start:start + settings_per_call]
            total[start:start + len(group)] += np.asarray(counts(
                params, group, batch["image"], batch["label"], batch["mask"]), np.int64)
    return [float(c) / images.shape[0] for c in total]


def sensitivity(model, variables: Mapping[str, Any], train_data, *, preprocess=None,
                task=None, include: str = ".*kernel", sparsities: Sequence[float] = SPARSITIES,
                bits: Sequence[int] = BITS, batch_size: int = 500,
                settings_per_call: int = 8, train_flag: str | None = None,
                forms: Sequence[str] = ()) -> Sensitivity:
    """The pruning and sharing curves of every params leaf whose path matches ``include``.

    Args:
      model, variables: a Flax module and its variables (every collection).
      train_data: ``(images, labels)`` of the *training* split; its held-out
        slice (``held_out``) is scored.
      preprocess: images -> model input (default ``x / 255``).
      task: a ``zylax.tasks`` object (default classification).
      include: a regex on the leaf path (``transforms.tree``), default every kernel.
      sparsities, bits: the settings of each curve.
      batch_size: examples per scored batch, at most (lowered so that the
        ``settings_per_call`` variants of a batch fit ``tasks.MAX_WORKING_VALUES``).
      settings_per_call: variants of one layer scored together (vmapped);
        lower it when the model's activations times this do not fit.
      train_flag: the model's training argument, when not found by name.
      forms: of ``FORMS``, the whole-layer quantizers each layer is also scored as
        (``form_leaf``; ``zylax.budget`` prices them).

    Returns:
      ``Sensitivity``. Sparsity 0 scores the model as given, so it equals ``dense``.
    """
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        raise ValueError(f"forms may hold {FORMS}, got {unknown}")
    forms = tuple(dict.fromkeys(forms))
    task = tasks.Classification() if task is None else task
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    data = held_out(train_data)
    leaves = {name: leaf for name, leaf in ztree.named_leaves(variables["params"]).items()
              if ztree.selector_fn(include)(name, leaf) and np.ndim(leaf) >= 2}
    if not leaves:
        raise ValueError(f"include {include!r} selects no params leaf of rank >= 2 (leaves: "
                         f"{list(ztree.named_leaves(variables['params']))[:6]})")
    curves_s, curves_b, curves_f = {}, {}, {}
    dense = None
    for name, leaf in leaves.items():
        w = jnp.asarray(leaf)
        formed = [form_leaf(w, form)[0].astype(w.dtype)[None] for form in forms]
        variants = jnp.concatenate([w[None], _pruned(w, sparsities), _shared(w, bits), *formed])
        scores = _scores(model, variables, name, variants, data, task, preprocess,
                         batch_size, settings_per_call, train_flag)
        dense = scores[0] if dense is None else dense
        scores = scores[1:]
        curves_s[name] = dict(zip((float(s) for s in sparsities), scores[:len(sparsities)]))
        scores = scores[len(sparsities):]
        curves_b[name] = dict(zip((int(b) for b in bits), scores[:len(bits)]))
        if forms:
            curves_f[name] = dict(zip(forms, scores[len(bits):]))
    return Sensitivity(task.metric, dense, curves_s, curves_b,
                       {name: int(np.size(leaf)) for name, leaf in leaves.items()},
                       int(data[0].shape[0]), curves_f)
