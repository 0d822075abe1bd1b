"""The Deep Compression recipe end to end (Han et al. 2015, Figure 1), on any Flax model.

    trained variables -> iterative prune / retrain -> k-means sharing + centroid
    fine-tuning -> Huffman-coded file -> load the file back and evaluate it

Every stage takes and returns the model's full variables
(``{"params": ..., "batch_stats": ..., ...}``): BatchNorm statistics are
retrained with the weights and written to the file. ``run`` chains the
stages; notebooks can call them one by one through a ``Context``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax

from zylax import archive, codecs, train
from zylax import data as zdata
from zylax.codecs import cast, constant
from zylax.transforms import batchnorm, pruning, sharing
from zylax.transforms import tree as ztree


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of one compression run (defaults in the spirit of Han et al.).

    Attributes:
      sparsity: final sparsity per layer, ``{regex: s}`` (first match wins;
        every pattern must match a selected leaf), reached over
        ``prune_cycles`` prune/retrain cycles on a cubic schedule. Default:
        75% of every kernel.
      include: which leaves are pruned and shared (a regex matched against the
        "/"-joined params path, or a ``(name, leaf) -> bool`` predicate;
        default: kernels).
      retrain_epochs: epochs of retraining after each pruning cycle (Adam),
        at ``retrain_lr`` or, when that is None, ``retrain_lr_scale`` times
        ``recipe.learning_rate`` (Han: 1/10).
      retrain_l2: L2 penalty added to the retraining gradient (Han's retraining
        keeps the baseline's L2 regularisation).
      gradual_epochs: if > 0, prune gradually instead (Zhu & Gupta): one run of
        this many epochs in which the ``prune`` wrapper raises the sparsity on
        the cubic schedule over the first 3/4 of the steps (masks every 50
        steps, ``gradual_update_every``), then trains the last 1/4 with the
        final masks. ``prune_cycles`` and ``retrain_epochs`` are then unused.
      bits: weight bits, int or ``{regex: bits}``; None gives Han's defaults
        (conv 8, dense 5).
      index_bits: gap bits, int, ``{regex: bits}``, ``"auto"`` (smallest
        file) or None (8 conv / 5 dense).
      finetune_epochs, finetune_lr: centroid fine-tuning (Adam).
      unshared_dtype: None stores the leaves sharing leaves alone (BatchNorm
        scales, biases, running statistics; any bias) raw; "float16" or
        "bfloat16" stores them at 2 bytes a value (``codecs.cast``), decoded
        to their own dtype. In a MobileNet they are half of a raw-BN file.
        ``run`` checks the trained variables fit before it starts.
      fold_batch_norm: fold every BatchNorm's moving statistics into its scale
        and bias before storing (``transforms.batchnorm.fold``): two vectors a
        layer instead of four, the other two stored as one value each. The
        file is then for inference (the folded statistics are not the
        trained ones); its score is measured on it like any other.
      recipe: batch size, base learning rate, label smoothing and augmentation
        of the retraining (``train.Recipe``; its ``epochs`` is not used here:
        ``retrain_epochs``, ``gradual_epochs`` and ``finetune_epochs`` count them).
      preprocess: images -> model input, the one the model was trained with
        (``data.Preprocess``; default ``x / 255``). Stored in the file.
      seed: data order and k-means seed.
    """

    sparsity: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {".*kernel": 0.75})
    include: Any = ztree.KERNELS
    prune_cycles: int = 3
    gradual_epochs: int = 0
    retrain_epochs: int = 3
    retrain_lr_scale: float = 0.1
    retrain_lr: float | None = None
    retrain_l2: float = 0.0
    bits: Any = None
    index_bits: Any = None
    finetune_epochs: int = 2
    finetune_lr: float = 1e-4
    unshared_dtype: str | None = None
    fold_batch_norm: bool = False
    recipe: train.Recipe = train.Recipe(epochs=10)
    preprocess: zdata.Preprocess = zdata.Preprocess()
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.sparsity, Mapping) or not all(
                isinstance(k, str) and 0 <= v < 1 for k, v in self.sparsity.items()):
            raise ValueError("sparsity must be a dict {leaf-path regex: sparsity in [0, 1)}, "
                             f"got {self.sparsity!r}")
        bits = self.bits if isinstance(self.bits, Mapping) else {".*": self.bits}
        for pattern, value in bits.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= 16):
                raise ValueError(f"bits for {pattern!r} must be an integer in [1, 16], got "
                                 f"{value!r}")
        for pattern in [*self.sparsity, *(self.bits if isinstance(self.bits, Mapping) else ())]:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"bad leaf-path regex {pattern!r}: {err}") from None
        for name in ("prune_cycles", "retrain_epochs", "finetune_epochs", "gradual_epochs",
                     "seed"):
            value = getattr(self, name)
            low = 1 if name == "prune_cycles" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.unshared_dtype not in (None, "float16", "bfloat16"):
            raise ValueError("unshared_dtype must be None, 'float16' or 'bfloat16', got "
                             f"{self.unshared_dtype!r}")
        for name in ("retrain_lr_scale", "finetune_lr", "retrain_l2"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)!r}")

    def check_against(self, params) -> None:
        """Raises when a ``sparsity`` or ``bits`` pattern matches none of the leaves
        ``include`` selects."""
        names = ztree.selected_names(params, self.include)
        bits = self.bits if isinstance(self.bits, Mapping) else {}
        for what, patterns in (("sparsity", self.sparsity), ("bits", bits)):
            unused = [p for p in patterns if not any(re.fullmatch(p, n) for n in names)]
            if unused:
                raise ValueError(f"{what} patterns {unused} match no selected leaf (patterns "
                                 f"are matched whole against {names[:6]}"
                                 f"{' ...' if len(names) > 6 else ''})")


@dataclasses.dataclass
class Context:
    """What every stage needs: model, data, config, task and how to report progress.

    ``task`` (a ``zylax.tasks`` object) defaults to ``Classification`` with the
    recipe's label smoothing; ``on_epoch`` gets each retraining epoch's row,
    with ``"stage"`` set to the stage's name.
    """

    model: Any
    train_data: tuple
    test_data: tuple
    config: Config
    progress: bool | None = None
    task: Any = None
    on_epoch: Callable[[dict], None] | None = None

    def __post_init__(self):
        if self.task is None:
            from zylax import tasks

            self.task = tasks.Classification(self.config.recipe.label_smoothing)

    def steps(self, epochs: int) -> int:
        """Optimizer steps in ``epochs`` epochs of the training data."""
        return epochs * zdata.num_batches(self.train_data[0].shape[0],
                                          self.config.recipe.batch_size, "drop")

    def fit(self, tx, epochs: int, desc: str, variables, **kwargs) -> train.FitResult:
        """``train.fit`` with this context's model, data, recipe and preprocessing."""
        on_epoch = None if self.on_epoch is None else (
            lambda row: self.on_epoch({"stage": desc, **row}))
        return train.fit(self.model, tx, self.train_data, epochs=epochs, variables=variables,
                         preprocess=self.config.preprocess, seed=self.config.seed,
                         progress=self.progress, desc=desc, **self.config.recipe.fit_kwargs(),
                         loss=self.task.loss(), on_epoch=on_epoch, **kwargs)

    def accuracy(self, variables, **kwargs) -> float:
        """The task's metric (test accuracy, AP50, mIoU) of ``variables``."""
        return self.task.evaluate(self.model, variables, *self.test_data,
                                  preprocess=self.config.preprocess, **kwargs)[self.task.metric]


def retrain_optimizer(cfg: Config, lr: float, steps: int) -> optax.GradientTransformation:
    """Adam with cosine decay over ``steps``, plus ``cfg.retrain_l2`` weight penalty."""
    adam = optax.adam(optax.cosine_decay_schedule(lr, steps))
    return optax.chain(optax.add_decayed_weights(cfg.retrain_l2), adam) if cfg.retrain_l2 else adam


def _retrain_lr(cfg: Config) -> float:
    return cfg.retrain_lr if cfg.retrain_lr is not None else \
        cfg.recipe.learning_rate * cfg.retrain_lr_scale


def _with_params(variables, params) -> dict:
    return {**variables, "params": params}


def iterative_prune(ctx: Context, variables):
    """Han's prune -> retrain cycles; surviving weights keep their values.

    Cycle ``c`` of ``C`` prunes each layer to ``s * (1 - (1 - c/C)^3)`` of its
    final sparsity ``s`` (never un-pruning), then retrains with the masks fixed
    by the ``prune`` optax wrapper at a lower learning rate.
    Returns ``(variables, masks)``; masks are shaped like ``variables["params"]``.
    """
    cfg = ctx.config
    masks = None
    lr = _retrain_lr(cfg)
    for cycle in range(1, cfg.prune_cycles + 1):
        fraction = 1.0 - (1.0 - cycle / cfg.prune_cycles) ** 3
        scaled = {pattern: s * fraction for pattern, s in cfg.sparsity.items()}
        new = pruning.sparsity_masks(variables["params"], 0.0, include=cfg.include,
                                     overrides=scaled)
        masks = new if masks is None else jax.tree.map(np.logical_and, masks, new)
        variables = _with_params(variables, pruning.apply_masks(variables["params"], masks))
        if cfg.retrain_epochs:
            tx = pruning.prune(retrain_optimizer(cfg, lr, ctx.steps(cfg.retrain_epochs)), masks)
            variables = ctx.fit(tx, cfg.retrain_epochs, f"prune {cycle}/{cfg.prune_cycles}",
                                variables).variables
    return jax.device_get(variables), jax.device_get(masks)


def gradual_update_every(steps: int) -> int:
    """Steps between mask updates of gradual pruning: 50, or ``steps // 20`` on short runs.

    At most a twentieth of the run, so masks are recomputed after the
    schedule reaches its final sparsity at 3/4 of the ``steps``.
    """
    return max(1, min(50, steps // 20))


def gradual_prune(ctx: Context, variables):
    """Zhu & Gupta gradual pruning in one run with the ``prune`` wrapper. Returns ``(variables, masks)``."""
    cfg = ctx.config
    steps = ctx.steps(cfg.gradual_epochs)
    if steps < 2:
        raise ValueError(f"gradual pruning needs at least 2 steps, {cfg.gradual_epochs} "
                         f"epoch(s) of this data make {steps}")
    lr = _retrain_lr(cfg)
    schedule = lambda count: pruning.cubic_progress(count, end_step=int(0.75 * steps))  # noqa: E731
    tx = pruning.prune(retrain_optimizer(cfg, lr, steps), sparsity=0.0, include=cfg.include,
                       overrides=cfg.sparsity, schedule=schedule,
                       update_every=gradual_update_every(steps))
    result = ctx.fit(tx, cfg.gradual_epochs, "gradual pruning", variables)
    masks = jax.device_get(pruning.prune_state_masks(result.state.opt_state))
    variables = result.variables
    return _with_params(variables, jax.device_get(pruning.apply_masks(variables["params"], masks))
                        ), masks


def share_and_finetune(ctx: Context, variables, masks):
    """k-means sharing per layer, then centroid-only fine-tuning.

    Returns ``(latent_variables, aux)``: the params of ``latent_variables``
    hold a codebook per shared leaf (``sharing.share``); the other
    collections are the ones fine-tuning left (BatchNorm statistics follow
    the shared weights).
    """
    cfg = ctx.config
    latent, aux = sharing.share(variables["params"], cfg.bits, masks, include=cfg.include,
                                seed=cfg.seed)
    latent_variables = _with_params(variables, latent)
    if cfg.finetune_epochs:
        tx = sharing.centroid_only(optax.adam(cfg.finetune_lr), latent, aux)
        latent_variables = ctx.fit(tx, cfg.finetune_epochs, "fine-tune centroids",
                                   latent_variables, transform=sharing.decode, aux=aux).variables
    return jax.device_get(latent_variables), jax.device_get(aux)


def fold_batch_norm(model, latent_variables, aux, sample) -> dict:
    """``latent_variables`` (``share_and_finetune``'s) with every BatchNorm folded
    (``transforms.batchnorm.fold``); the layers and their epsilons are found by
    running the decoded model in inference mode on ``sample`` (one preprocessed
    example), whatever its ``train`` argument."""
    decoded = _with_params(latent_variables, sharing.decode(latent_variables["params"], aux))
    layers = batchnorm.batch_norm_layers(model, decoded, sample,
                                         **train.mode_kwargs(model, False))
    return batchnorm.fold(latent_variables, layers)


def storable(latent_variables, aux, index_bits=None, unshared_dtype: str | None = None) -> dict:
    """The variables as ``archive.save`` stores them: shared leaves as codec containers.

    ``latent_variables`` and ``aux`` come from ``share_and_finetune`` (or
    ``sharing.share``); ``index_bits`` and ``unshared_dtype`` are ``Config``'s.
    Float arrays whose elements are all equal (a folded BatchNorm's statistics)
    are stored as one value (``codecs.constant``).
    """
    stored = constant.uniform_floats(_with_params(
        latent_variables, sharing.compressed(latent_variables["params"], aux, index_bits)))
    return cast.narrow_floats(stored, unshared_dtype) if unshared_dtype else stored


@dataclasses.dataclass
class Result:
    """What ``run`` produced.

    Attributes:
      variables: the model's variables decoded from the written file.
      report: the dict written as the JSON report (``zylax.report.build``):
        dense_bytes, file_bytes, ratio, dense/pruned/compressed_accuracy, layers, ...
      stored: the compressed tree that was saved (codec containers).
      snapshots: params after each stage ("dense", "pruned", "quantized"), for plots.
      masks: the pruning masks.
    """

    variables: dict
    report: dict
    stored: dict
    snapshots: dict
    masks: Any


def run(model, variables, train_data, test_data, config: Config = Config(), *, out: str,
        metadata: Mapping | None = None, reference: Mapping | None = None,
        progress: bool | None = None, task=None,
        on_epoch: Callable[[dict], None] | None = None) -> Result:
    """Deep-compresses a trained model and writes it to ``out`` (a ``.zyl`` file).

    Args:
      model: any ``flax.linen`` module (``train`` argument optional).
      variables: its trained variables (``{"params": ..., "batch_stats": ...}``).
      train_data, test_data: ``(images (N, H, W, C), labels)``: labels ``(N,)``
        for classification, the dict of arrays of ``task`` for detection and
        segmentation (``data.load("fashion_mnist_scenes", split)``'s targets).
      config: the recipe (``Config``).
      out: path of the file to write.
      metadata: extra JSON-serialisable entries for the file; the
        preprocessing, class count and input shape are always recorded. For
        ``zylax evaluate FILE`` to rebuild the model, give
        ``{"model": "package.module:factory", "data": "fashion_mnist"}`` (or
        ``"net"``, a registered name).
      reference: published figures per stage for the report.
      task: a ``zylax.tasks`` object (default ``Classification()``): its loss
        retrains, its metric (accuracy, AP50, mIoU) is the "accuracy" of
        every stage in the report (``report["metric"]`` names it).
      on_epoch: called with each retraining epoch's history row (``train.fit``),
        with ``"stage"`` naming the stage (e.g. ``"prune 1/3"``).

    Returns:
      ``Result``; ``result.variables`` and ``report["compressed_accuracy"]``
      come from the file read back.
    """
    train.split_variables(variables)
    variables = jax.device_get(dict(variables))
    config.check_against(variables["params"])
    if config.unshared_dtype:  # a value float16 cannot hold fails now, not after retraining
        cast.narrow_floats(variables, config.unshared_dtype)
    from zylax import tasks

    ctx = Context(model, train_data, test_data, config, progress, task, on_epoch)
    task = ctx.task
    times, snapshots = {}, {"dense": variables["params"]}
    dense_accuracy = ctx.accuracy(variables)

    t0 = time.perf_counter()
    prune_stage = gradual_prune if config.gradual_epochs else iterative_prune
    pruned, masks = prune_stage(ctx, variables)
    times["prune_retrain"] = time.perf_counter() - t0
    pruned_accuracy = ctx.accuracy(pruned)
    snapshots["pruned"] = pruned["params"]

    t0 = time.perf_counter()
    latent, aux = share_and_finetune(ctx, pruned, masks)
    if config.fold_batch_norm:
        latent = fold_batch_norm(model, latent, aux, config.preprocess(train_data[0][:1]))
    times["quantize_finetune"] = time.perf_counter() - t0
    stored = storable(latent, aux, config.index_bits, config.unshared_dtype)
    snapshots["quantized"] = jax.tree.map(codecs.dense, stored["params"])

    t0 = time.perf_counter()
    info = tasks.file_metadata(task, config.preprocess, *train_data, metadata)
    file_bytes = archive.save(out, stored, metadata=info)
    times["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    loaded, _ = archive.load(out)
    compressed_accuracy = ctx.accuracy(loaded)
    times["decode_evaluate"] = time.perf_counter() - t0
    report = _report(out, file_bytes, stored, loaded, reference, times,
                     {"dense": dense_accuracy, "pruned": pruned_accuracy,
                      "compressed": compressed_accuracy})
    report["metric"] = task.metric
    return Result(variables=loaded, report=report, stored=stored, snapshots=snapshots,
                  masks=masks)


def _report(out, file_bytes, stored, loaded, reference, times, accuracies) -> dict:
    from zylax import report as zreport

    exact = ztree.bit_identical(loaded, jax.tree.map(codecs.dense, stored))
    return zreport.build(archive.read_header(out), file_bytes=file_bytes, accuracies=accuracies,
                         seconds=times, decoded_exactly=exact, reference=reference)
