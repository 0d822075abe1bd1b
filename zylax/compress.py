"""One pipeline for every chain of methods, on any Flax model: retrain each stage, write the
file, score what was read back.

    trained variables -> stage 1 (init, retrain with its tx) -> stage 2 -> ...
    -> store (codec containers) -> .zyl file -> load it back -> evaluate

``run(model, variables, train_data, test_data, methods=[...], out=...)`` takes
any chain of ``zylax.methods`` (Deep Compression is ``[prune(...),
share(...)]``, pruned TTQ ``[prune(...), ternary()]``, ...). Each stage
starts from what the stages before it left: its method takes its leaves,
the quantized leaves of earlier stages keep their form (and go on training),
every other leaf trains as float with its pruned zeros kept. Every stage
takes and returns the model's full variables: BatchNorm statistics are
retrained with the weights and written to the file.

Retraining (``Retrain``) uses Adam with cosine decay over each stage, at the
user's learning rate or, by default, at one chosen by a short measured sweep
on a held-out slice of the training data (``choose_learning_rate``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax import archive, codecs, methods, report, tasks, train
from zylax import data as zdata
from zylax.codecs import constant
from zylax.methods import Combined, Method, combine
from zylax.nets.layers import mode_kwargs
from zylax.transforms import batchnorm
from zylax.transforms import tree as ztree

LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
"""The candidates of ``choose_learning_rate``."""
RECALIBRATION_EXAMPLES = 5000
"""Training images whose batch statistics replace BatchNorm's after a stage of a method that
``recalibrates``."""
SWEEP_EXTENSIONS = 2
"""Most rates ``choose_learning_rate`` tries beyond ``LEARNING_RATES`` (``next_learning_rate``)."""
SWEEP_STEPS = 100
"""Steps each candidate learning rate trains for in ``choose_learning_rate``."""
HELD_OUT = 0.1
"""The fraction of the training data ``choose_learning_rate`` scores on (at most 2,000)."""
FALLBACK_LEARNING_RATE = 1e-3
"""The rate ``choose_learning_rate`` returns when the data is too small for a sweep."""


def default_methods() -> list[Method]:
    """Deep Compression with settings that keep a model's accuracy: half of every kernel
    pruned in one cycle, 5-bit shared weights, one epoch of retraining each (measured in
    RESULTS.md, "Defaults on a user's model")."""
    return [methods.prune(sparsity=0.5), methods.share(bits=5)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """A compression recipe as data (what ``zylax.registry`` keeps per net).

    Attributes:
      methods: a chain spec of ``methods.build`` (``"deep"``, ``"prune+ttq"``,
        ``"pattern&share"``).
      settings: ``{method name: {setting: value}}`` for the chain's methods.
      retrain: ``Retrain`` fields.
      fold_batch_norm: ``run``'s.
      unshared_dtype: ``"float16"``/``"bfloat16"``: the last stage is combined
        with a ``cast`` of every leaf it leaves float, retrained as long (None:
        stored as they are).
    """

    methods: str = "deep"
    settings: Mapping[str, Mapping] = dataclasses.field(default_factory=dict)
    retrain: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fold_batch_norm: bool = False
    unshared_dtype: str | None = None

    def chain(self) -> list:
        """The methods, in order (a ``cast`` combined into the last when ``unshared_dtype``)."""
        chain = methods.build(self.methods, self.settings)
        if self.unshared_dtype is not None:
            last = chain[-1].members[-1] if isinstance(chain[-1], Combined) else chain[-1]
            chain[-1] = combine(chain[-1], methods.cast(dtype=self.unshared_dtype,
                                                        epochs=last.epochs))
        return chain


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retrain:
    """How every stage retrains.

    Attributes:
      learning_rate: Adam's peak rate (cosine decay over each stage, times the
        method's ``lr_scale``); None takes the leading method's paper rate
        (``paper_learning_rate``), else chooses it by ``choose_learning_rate``.
      batch_size: examples per step.
      weight_decay: an L2 term added to the gradients (Han's retraining keeps
        the baseline's L2).
      label_smoothing: of classification targets.
      augment: flips and shifts (scenes: mirrored with boxes and masks).
      train_flag: the model's training-mode argument when it is none of
        ``nets.layers.KNOWN_FLAGS`` (``nets.layers.mode_kwargs``).
    """

    learning_rate: float | None = None
    batch_size: int = 128
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = False
    train_flag: str | None = None

    def __post_init__(self):
        if self.learning_rate is not None and not 0 < self.learning_rate <= 10:
            raise ValueError(f"learning_rate must be in (0, 10], got {self.learning_rate!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or \
                self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        for name in ("weight_decay", "label_smoothing"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")

    def optimizer(self, learning_rate: float, steps: int) -> optax.GradientTransformation:
        """Adam with cosine decay over ``steps``, plus the L2 term: ``optax.adam(
        optax.cosine_decay_schedule(learning_rate, steps))`` bit for bit, with the rate held
        in the optimizer's state (``cosine_decayed_rate``)."""
        adam = optax.chain(optax.scale_by_adam(), cosine_decayed_rate(learning_rate, steps))
        return optax.chain(optax.add_decayed_weights(self.weight_decay), adam) \
            if self.weight_decay else adam


class PeakRateState(NamedTuple):
    """The steps taken and the peak learning rate (an array, so not part of the program)."""

    count: jax.Array
    peak: jax.Array


def cosine_decayed_rate(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Updates times ``-learning_rate * (1 + cos(pi * min(t, steps) / steps)) / 2`` at step
    ``t``: ``optax.scale_by_learning_rate(optax.cosine_decay_schedule(learning_rate, steps))``
    to the bit, with ``learning_rate`` in the state rather than baked into the compiled step,
    so the runs of a learning-rate sweep share one compiled program (and its cache entry)."""
    decay = optax.cosine_decay_schedule(1.0, max(steps, 1))

    def init_fn(params):
        del params
        return PeakRateState(jnp.zeros([], jnp.int32), jnp.asarray(learning_rate, jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        step_size = -1 * (state.peak * decay(state.count))
        updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, PeakRateState(optax.safe_int32_increment(state.count), state.peak)

    return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass
class Stage:
    """A method being retrained: the combined methods so far and their state."""

    plan: Combined
    state: dict
    collections: dict


@dataclasses.dataclass
class Context:
    """What every stage needs: model, data, task, preprocessing and retraining settings."""

    model: Any
    train_data: tuple
    test_data: tuple
    task: Any
    preprocess: zdata.Preprocess
    retrain: Retrain
    seed: int = 0
    progress: bool | None = None
    on_epoch: Callable[[dict], None] | None = None

    def steps(self, epochs: int, examples: int | None = None) -> int:
        """Optimizer steps in ``epochs`` epochs of the training data."""
        n = self.train_data[0].shape[0] if examples is None else examples
        return epochs * zdata.num_batches(n, self.retrain.batch_size, "drop")

    def fit(self, stage: Stage, tx, epochs: int, desc: str, data=None, **kwargs):
        """``train.fit`` of the stage's latent params with ``tx``."""
        on_epoch = None if self.on_epoch is None else (
            lambda row: self.on_epoch({"stage": desc, **row}))
        r = self.retrain
        return train.fit(self.model, tx, data or self.train_data, epochs=epochs,
                         variables={**stage.collections, "params": stage.state["latent"]},
                         method=stage.plan, aux=stage.state["aux"], preprocess=self.preprocess,
                         seed=self.seed, progress=self.progress, desc=desc,
                         batch_size=r.batch_size, label_smoothing=r.label_smoothing,
                         augment=r.augment, task=self.task, on_epoch=on_epoch,
                         train_flag=r.train_flag, **kwargs)

    def loss(self, stage: Stage, data) -> float:
        """The task's mean loss of the stage's model on ``data`` ``(images, labels)``, in
        inference mode."""
        loss_of = self.task.loss()
        flag = self.retrain.train_flag

        @jax.jit
        def batch_loss(latent, collections, aux, batch):
            params = stage.plan.apply({"latent": latent, "aux": aux})
            outputs, _ = train.forward(self.model, params, collections, batch["image"],
                                       train=False, train_flag=flag)
            value, _ = loss_of(outputs, batch["label"], batch["mask"])
            return value * jnp.sum(batch["mask"]), jnp.sum(batch["mask"])

        total, count = 0.0, 0.0
        for batch in zdata.batches(*data, 250, preprocess=self.preprocess, shuffle=False,
                                   remainder="pad"):
            value, n = batch_loss(stage.state["latent"], stage.collections, stage.state["aux"],
                                  batch)
            total, count = total + float(value), count + float(n)
        return total / max(count, 1.0)

    def score(self, stage: Stage, data=None) -> float:
        """The task's metric (accuracy, AP50, mIoU) of the stage's model on the test data."""
        images, labels = data or self.test_data
        return self.task.evaluate(self.model, {**stage.collections,
                                               "params": stage.state["latent"]},
                                  images, labels, preprocess=self.preprocess,
                                  method=stage.plan, aux=stage.state["aux"])[self.task.metric]


def check_chain(stages: Sequence[Method | Combined], params) -> None:
    """Refuses, before anything trains, a stage that would select no leaf of ``params`` once
    the earlier stages' carried leaves are taken (``"svd+svd"``: the second ``sparse_vd``
    finds every kernel shared by the first ``share``), as ``follow`` would after training.
    ``ValueError`` naming the stage."""
    taken: frozenset = frozenset()
    for i, (stage, name) in enumerate(zip(stages, _stage_names(stages))):
        plan = combine(stage)
        try:
            selections = plan.selections(params, taken)
        except ValueError as err:
            raise ValueError(f"stage {i + 1} ({name}): {err}") from None
        taken = taken.union(*(names for member, names in zip(plan.members, selections)
                              if member.carries))


def begin(method: Method | Combined, variables: dict, key) -> Stage:
    """The first stage: ``method`` initialised on the trained variables."""
    params, collections = train.split_variables(variables)
    plan = combine(method)
    return Stage(plan, plan.init(params, key), dict(collections))


def follow(previous: Stage, method: Method | Combined, key) -> Stage:
    """The stage after ``previous``: the quantized leaves of its methods keep their form and
    state (methods that ``carry``), ``method`` takes its leaves among the rest, every other
    leaf is float with the values ``previous`` gives it (pruned zeros included)."""
    dense = previous.plan.apply(previous.state)
    carried = [i for i, m in enumerate(previous.plan.members) if m.carries]
    owns = previous.state["latent"]["own"]
    taken = frozenset(n for i in carried for n in owns[i])
    new = combine(method)
    state = new.init(dense, key, taken=taken)
    old = ztree.named_leaves(previous.state["latent"]["params"])
    tree = ztree.map_named(lambda n, leaf: old[n] if n in taken else leaf,
                           state["latent"]["params"])
    plan = Combined(tuple(previous.plan.members[i] for i in carried) + new.members)
    state = {"latent": {"params": tree,
                        "own": tuple(owns[i] for i in carried) + state["latent"]["own"]},
             "aux": tuple(previous.state["aux"][i] for i in carried) + state["aux"]}
    return Stage(plan, state, previous.collections)


def retrain_stage(ctx: Context, stage: Stage, method: Method | Combined, learning_rate: float,
                  desc: str) -> Stage:
    """``stage`` retrained for ``method``'s epochs at ``learning_rate`` times its scale."""
    members = method.members if isinstance(method, Combined) else (method,)
    epochs, scale = max(m.epochs for m in members), members[0].lr_scale
    if not epochs:
        return stage
    steps = ctx.steps(epochs)
    tx = stage.plan.tx(ctx.retrain.optimizer(learning_rate * scale, steps), steps)
    result = ctx.fit(stage, tx, epochs, desc)
    variables = result.variables
    params, collections = train.split_variables(variables)
    state = {"latent": params, "aux": stage.state["aux"]}
    if any(m.recalibrates for m in members):
        collections = train.batch_statistics(
            ctx.model, stage.plan.apply(state), dict(collections),
            ctx.train_data[0][:RECALIBRATION_EXAMPLES], preprocess=ctx.preprocess,
            batch_size=ctx.retrain.batch_size, train_flag=ctx.retrain.train_flag,
            seed=ctx.seed)
    return Stage(stage.plan, state, dict(collections))


def next_learning_rate(scores: Mapping[float, float], candidates: Sequence[float],
                       extensions: int = SWEEP_EXTENSIONS) -> float | None:
    """The rate to try after ``candidates`` when the best of ``scores`` ({rate: held-out
    loss}, ties to the lower rate) is the highest or lowest rate tried: a decade beyond the
    edge's neighbour (best 3e-3 of 1e-4..3e-3: 1e-2, then 3e-2). None when the best is
    inside, or ``extensions`` rates beyond ``candidates`` were tried already."""
    tried = sorted(scores)
    if len(tried) < 2 or len(tried) - len(set(candidates)) >= extensions:
        return None
    best = min(tried, key=lambda rate: (scores[rate], rate))
    if best == tried[-1]:
        return tried[-2] * 10
    if best == tried[0]:
        return tried[1] / 10
    return None


def model_hint(model) -> dict:
    """``{"model": "package.module:Class"}`` of ``model``'s class, the spec that ``--model``
    takes, recorded so that a file tells its user which model it needs (never imported);
    ``{}`` for a class defined in ``__main__`` or inside a function."""
    cls = type(model)
    spec = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or not re.fullmatch(r"[\w.]+:[\w.]+", spec):
        return {}
    return {"model": spec}


def paper_learning_rate(method: Method | Combined) -> float | None:
    """The rate the paper of ``method`` (or of its first member that has one) trains at
    (``Method.paper_learning_rate``, e.g. Adam 1e-3 for sparse variational dropout); None
    when none fixes one."""
    rates = [m.paper_learning_rate for m in getattr(method, "members", (method,))
             if m.paper_learning_rate is not None]
    return rates[0] if rates else None


def choose_learning_rate(ctx: Context, stage: Stage, method: Method | Combined,
                         candidates: Sequence[float] = LEARNING_RATES,
                         steps: int = SWEEP_STEPS) -> tuple[float, dict]:
    """The retraining rate with the lowest held-out loss after ``steps`` steps of ``stage``.

    Each candidate retrains the first stage for ``steps`` steps (at most one
    epoch) on the training data less a held-out slice (``HELD_OUT``, at most
    2,000 examples, never the test data), and is scored there by the task's
    loss in inference mode: the loss, not the metric, because the baseline was
    trained on that slice too and its accuracy there saturates. While the best
    rate is the highest or lowest tried, the sweep goes on beyond it
    (``next_learning_rate``; sweeps measured in RESULTS.md, "Retraining
    learning rate"). Returns ``(rate, {rate: held-out loss})``; ties
    go to the lower rate.
    """
    images, labels = ctx.train_data
    n = images.shape[0]
    held = max(1, min(2000, int(n * HELD_OUT)))
    if n - held < ctx.retrain.batch_size:
        return FALLBACK_LEARNING_RATE, {}
    fitted = (images[:n - held], zdata.take(labels, np.arange(n - held)))
    held_out = (images[n - held:], zdata.take(labels, np.arange(n - held, n)))
    per_epoch = zdata.num_batches(n - held, ctx.retrain.batch_size, "drop")
    steps = min(steps, per_epoch)
    quiet = dataclasses.replace(ctx, on_epoch=None, progress=False)

    def held_out_loss(rate: float) -> float:
        tx = stage.plan.tx(ctx.retrain.optimizer(rate, steps), steps)
        result = quiet.fit(stage, tx, 1, f"learning rate {rate:g}", data=fitted, max_steps=steps)
        params, collections = train.split_variables(result.variables)
        tried = Stage(stage.plan, {"latent": params, "aux": stage.state["aux"]},
                      dict(collections))
        loss = quiet.loss(tried, held_out)
        return loss if math.isfinite(loss) else math.inf

    scores = {rate: held_out_loss(rate) for rate in candidates}
    rate = next_learning_rate(scores, candidates)
    while rate is not None:
        scores[rate] = held_out_loss(rate)
        rate = next_learning_rate(scores, candidates)
    best = min(scores, key=lambda rate: (scores[rate], rate))
    return best, scores


@dataclasses.dataclass
class Result:
    """What ``run`` produced.

    Attributes:
      variables: the model's variables decoded from the written file.
      report: the dict written as the JSON report (``zylax.report.build``):
        dense_bytes, file_bytes, ratio, dense/compressed_accuracy, stages,
        layers, learning_rate, ...
      stored: the compressed tree that was saved (codec containers).
      snapshots: params after each stage (``"dense"``, then each stage's name),
        for plots.
    """

    variables: dict
    report: dict
    stored: dict
    snapshots: dict


def run(model, variables, train_data, test_data, methods: Sequence | None = None, *,
        out: str, retrain: Retrain = Retrain(), preprocess: zdata.Preprocess | None = None,
        task=None, fold_batch_norm: bool = False, metadata: Mapping | None = None,
        reference: Mapping | None = None, seed: int = 0, progress: bool | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> Result:
    """Compresses a trained model with a chain of methods and writes it to ``out``.

    Args:
      model: any ``flax.linen`` module (its training flag detected, or named
        with ``retrain.train_flag``).
      variables: its trained variables (``{"params": ..., "batch_stats": ...}``).
      train_data, test_data: ``(images (N, H, W, C), labels)``: labels ``(N,)``
        for classification, the dict of arrays of ``task`` for detection and
        segmentation.
      methods: the chain (``zylax.methods``; a ``combine`` is one stage);
        default ``default_methods()``.
      out: the ``.zyl`` file to write.
      retrain: how each stage retrains (``Retrain``).
      preprocess: images -> model input, as the model was trained (default
        ``x / 255``); stored in the file.
      task: a ``zylax.tasks`` object (default classification with the
        retraining's label smoothing); its metric is every stage's score.
      fold_batch_norm: fold every BatchNorm's statistics into its scale and
        bias before storing (an inference-only file, ``transforms.batchnorm``).
      metadata: extra JSON entries for the file (``{"data": "fashion_mnist"}``
        lets ``zylax evaluate`` find the test split); the preprocessing, task,
        class count and input shape are always recorded, and the model's class
        as a hint (``model_hint``) unless ``metadata`` names a ``net`` or ``model``.
      reference: published figures per size stage for the report.
      seed: data order, k-means and the learning-rate sweep.
      on_epoch: called with each retraining epoch's history row, ``"stage"``
        naming the stage (e.g. ``"prune 1/3"``).

    Returns:
      ``Result``; ``result.variables`` and ``report["compressed_accuracy"]``
      come from the file read back.
    """
    params, collections = train.split_variables(variables)
    variables = jax.device_get(dict(variables))
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    task = tasks.Classification(retrain.label_smoothing) if task is None else task
    ctx = Context(model, train_data, test_data, task, preprocess, retrain, seed, progress,
                  on_epoch)
    sample = preprocess(train_data[0][:1])
    inference = mode_kwargs(model, False, retrain.train_flag)
    chain = list(default_methods() if methods is None else methods)
    if not chain:
        raise ValueError("methods is empty; give at least one method")
    stages = [s.bind(model, variables, sample, **inference).sized(len(train_data[0]))
              for m in chain for s in m.stages()]
    names = _stage_names(stages)
    check_chain(stages, params)
    combine(*stages).store_collections(dict(collections))  # a value no type holds fails now

    t0 = time.perf_counter()
    dense_accuracy = ctx.task.evaluate(model, variables, *test_data,
                                       preprocess=preprocess)[task.metric]
    key = jax.random.key(seed)
    stage = begin(stages[0], variables, jax.random.fold_in(key, 0))
    learning_rate, sweep = retrain.learning_rate or paper_learning_rate(stages[0]), {}
    if learning_rate is None:
        learning_rate, sweep = choose_learning_rate(ctx, stage, stages[0])
    rows, snapshots = [], {"dense": variables["params"]}
    for i, (method, name) in enumerate(zip(stages, names)):
        if i:
            stage = follow(stage, method, jax.random.fold_in(key, i))
        stage = retrain_stage(ctx, stage, method, learning_rate, name)
        rows.append({"stage": name, "accuracy": ctx.score(stage),
                     "seconds": time.perf_counter() - t0})
        snapshots[name] = jax.device_get(stage.plan.apply(stage.state))
    stored = storable(stage, model, sample, fold_batch_norm, inference)
    extra = dict(metadata or {})
    if "net" not in extra and "model" not in extra:
        extra.update(model_hint(model))
    info = tasks.file_metadata(task, preprocess, *train_data, extra)
    t1 = time.perf_counter()
    file_bytes = archive.save(out, stored, metadata=info)
    loaded, header = archive.load_with_header(out)
    compressed_accuracy = task.evaluate(model, loaded, *test_data,
                                        preprocess=preprocess)[task.metric]
    exact = ztree.bit_identical(loaded, jax.tree.map(codecs.dense, stored))
    rep = report.build(header, file_bytes=file_bytes,
                       accuracies={"dense": dense_accuracy, "compressed": compressed_accuracy},
                       seconds={"stages": t1 - t0, "save_load_evaluate": time.perf_counter() - t1},
                       decoded_exactly=exact, reference=reference)
    rep.update(metric=task.metric, stage_scores=rows, learning_rate=learning_rate,
               learning_rate_sweep={f"{k:g}": v for k, v in sweep.items()},
               methods=[m.name for m in stages])
    return Result(variables=loaded, report=rep, stored=stored, snapshots=snapshots)


def storable(stage: Stage, model, sample, fold: bool, inference: Mapping) -> dict:
    """The variables as ``archive.save`` stores them: each method's leaves as its codec
    containers, the other collections through the methods' ``store_collections``, every
    all-equal float array as one value (``codecs.constant``); BatchNorm folded first when
    ``fold``."""
    stored = {**stage.plan.store_collections(jax.device_get(stage.collections)),
              "params": stage.plan.store(stage.state)}
    if fold:
        dense = {**jax.device_get(stage.collections),
                 "params": jax.device_get(stage.plan.apply(stage.state))}
        layers = batchnorm.batch_norm_layers(model, dense, sample, **inference)
        stored = batchnorm.fold(stored, layers)
    return constant.uniform_floats(stored)


def _stage_names(stages: Sequence) -> list[str]:
    """``["prune 1/3", "prune 2/3", "prune 3/3", "share"]``: cycles numbered."""
    names = [m.name for m in stages]
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if counts[n] == 1 else f"{n} {seen[n]}/{counts[n]}")
    return out
