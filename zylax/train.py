"""A jitted, data-parallel, resumable training loop.

Everything takes objects: a linen module, its variables
(``{"params": ..., "batch_stats": ..., ...}``), arrays of images and labels
and a ``data.Preprocess``. No dataset or net names.

The state is a plain pytree (``TrainState``) holding everything a run needs to
continue bit-identically: parameters, optimizer state (which is where pruning
masks live), the model's other collections (BatchNorm statistics, ...), the
step, the base PRNG key and ``aux``, constant arrays a compression method
reads (weight-sharing indices, ...).

Models: the training flag of ``__call__`` is found by name (``train``,
``training``, ``deterministic``, ...; ``nets.layers.mode_kwargs``) or named
with ``train_flag``; a model without one is called with ``x`` alone. In
training the collections in ``MUTABLE`` (BatchNorm's ``batch_stats``) are
mutable, so a model may also pick its mode with
``self.is_mutable_collection("batch_stats")``. ``fit`` warns in one line when
a BatchNorm or Dropout layer stays in inference mode while training. Other
collections pass through unchanged.

Compression composes with training through ``method`` (a ``zylax.methods``
method): the trained params are its latent state, and the loss evaluates
``model.apply({"params": method.apply({"latent": params, "aux": aux}, rng),
...}, x)`` plus ``method.penalty`` inside the differentiated function, so
gradients flow through the method (and its straight-through estimators) to
the latent parameters that the optimizer updates.

Data parallelism: every batch is split over a one-axis ``Mesh`` of all devices
(``NamedSharding(mesh, P("data"))``); the state is replicated. The same code
runs on one CPU, several GPUs or a TPU slice. On several hosts, call
``jax.distributed.initialize()`` first; each host then feeds its own slice of
the global batch (``jax.make_array_from_process_local_data`` assembles it):
give each host its own shard of the examples and the same ``seed`` (the seed
also initialises the model and the dropout keys, which every host must share).
``batch_size`` is per host; the epoch's statistics and examples/s cover all
hosts (``tests/test_multiprocess.py``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from zylax import data as zdata
from zylax.nets.layers import KNOWN_FLAGS, mode_kwargs, training_mode_issues
from zylax.transforms.tree import map_named, named_leaves

Params = Any
LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
"""``loss(outputs, targets, mask) -> (mean loss, {name: sum over the batch})``.

``outputs`` is what the model returns, ``targets`` the batch's ``"label"``
entry (an array or a dict of arrays), ``mask`` (B,) is 1 for real examples
and 0 for padding. The stats are summed over real examples (``"correct"``
is shown as accuracy).
"""


MUTABLE = ("batch_stats",)
"""Collections a training step lets the model update."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """Training settings: what ``zylax train`` and the registry's nets use.

    ``learning_rate`` rises linearly from 0 over ``warmup_steps``, then decays
    by cosine to zero over the rest of the run. The optimizer is AdamW with
    decoupled ``weight_decay``, or, when ``sgd_momentum`` is set, SGD with
    Nesterov momentum and ``weight_decay`` as an L2 term added to the
    gradients (as torchvision's reference scripts train). ``label_smoothing``
    smooths the training targets; ``augment`` randomly flips and shifts
    training images (mirrors scenes with their boxes and masks); ``pad_to``
    pads 28x28 images for nets that want 32x32 input (it goes into the
    ``data.Preprocess``).
    """

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    augment: bool = False
    pad_to: int | None = None
    sgd_momentum: float | None = None

    def fit_kwargs(self) -> dict:
        """The ``fit`` arguments this recipe fixes (batch size, smoothing, augmentation)."""
        return {"batch_size": self.batch_size, "label_smoothing": self.label_smoothing,
                "augment": self.augment}

    def optimizer(self, steps: int, learning_rate: float | None = None
                  ) -> optax.GradientTransformation:
        """AdamW (or SGD, see the class) with warmup and cosine decay over ``steps``."""
        lr = self.learning_rate if learning_rate is None else learning_rate
        warmup = min(self.warmup_steps, max(steps - 1, 0))
        schedule = (optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, 1))
                    if warmup else optax.cosine_decay_schedule(lr, max(steps, 1)))
        if self.sgd_momentum is None:
            return optax.adamw(schedule, weight_decay=self.weight_decay)
        return optax.chain(optax.add_decayed_weights(self.weight_decay),
                           optax.sgd(schedule, momentum=self.sgd_momentum, nesterov=True))


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to resume: a pytree, checkpointed whole.

    ``collections`` are the model's variables other than ``params``.
    """

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    collections: Any
    rng: jax.Array
    aux: Any

    @property
    def variables(self) -> dict:
        """``{"params": params, **collections}`` (params latent when a method was trained)."""
        return {"params": self.params, **self.collections}


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``Mesh`` named ``"data"`` over ``devices`` (default: all)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along its first axis."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
    """Copies a pytree onto every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def model_params(method, params: Params, aux: Any, rng=None) -> Params:
    """The params the model runs: ``params`` itself, or ``method.apply`` of the latent
    state ``{"latent": params, "aux": aux}`` (``rng`` for methods that sample)."""
    if method is None:
        return params
    return method.apply({"latent": params, "aux": aux}, rng)


def init_variables(model, sample: np.ndarray, seed: int, train_flag: str | None = None
                   ) -> dict[str, Any]:
    """``model.init`` on one sample batch (inference mode); returns every collection.

    Jitted: one compiled program, with the same values as running the ops one by
    one (BENCHMARKS.md, section 8).
    """
    kwargs = mode_kwargs(model, False, train_flag)
    init = jax.jit(lambda key, x: model.init(key, x, **kwargs))
    variables = init(jax.random.key(seed), jnp.asarray(sample))
    return dict(flax.core.unfreeze(variables))


def warm_start(variables: dict, donor: dict) -> tuple[dict, list[str]]:
    """``variables`` with every layer that ``donor`` has, whole and of the same shapes, copied in.

    Transfer learning as DeepLab and the TF Object Detection API do it: the
    trunk of a trained net (a classifier's backbone, SSDLite's MobileNet V2)
    starts a new net whose other layers stay as ``model.init`` made them.
    Leaves are matched by their full path, collection included, so BatchNorm
    statistics come along (``"params/block3/depthwise/kernel"``,
    ``"batch_stats/block3/depthwise_bn/mean"``). A layer (the leaves under
    one module path, over all collections) is copied whole or not at all: a
    head over other labels, whose bias may fit but whose kernel does not,
    keeps its fresh values. Copied values take the dtype of ``variables``'
    leaf.

    Args:
      variables: the new model's variables, every collection
        (``init_variables(model, sample, seed)``, ``sample`` one batch of
        model input).
      donor: another model's variables, every collection (``archive.load``'s
        first result, a checkpoint's ``variables``).

    Returns:
      ``(variables, copied)``: new variables (the inputs are not changed) and
      the copied leaves' paths, in tree order.

    Raises:
      ValueError: when no layer matches, naming a few paths of each tree, or a
      copied value is not finite in the model's dtype (1e300 in float32).
    """
    mine, theirs = named_leaves(variables), named_leaves(donor)

    def fits(name):
        return name in theirs and np.shape(theirs[name]) == np.shape(mine[name])

    broken = {_layer_path(name) for name in mine if not fits(name)}
    copied = [name for name in mine if _layer_path(name) not in broken]
    if not copied:
        hint = ("" if set(donor) & set(variables) else
                f"; the donor has none of the model's collections {sorted(variables)}: "
                "pass its whole variables dict, not only its params")
        raise ValueError(f"warm start: no layer of the donor matches the model by path and "
                         f"shape (model: {list(mine)[:3]} ..., donor: {list(theirs)[:3]} ...)"
                         f"{hint}")
    for name in copied:
        value = np.asarray(theirs[name])
        if np.issubdtype(value.dtype, np.floating):
            with np.errstate(over="ignore", invalid="ignore"):
                cast = value.astype(np.asarray(mine[name]).dtype)
            if not np.all(np.isfinite(cast)):
                raise ValueError(f"warm start: donor leaf {name} is not finite as "
                                 f"{np.asarray(mine[name]).dtype} (max |value| "
                                 f"{np.max(np.abs(value)):.3g})")
    chosen = set(copied)
    started = map_named(lambda name, leaf: jnp.asarray(theirs[name], jnp.result_type(leaf))
                        if name in chosen else leaf, dict(variables))
    return started, copied


def _layer_path(name: str) -> str:
    """``"batch_stats/block3/bn/mean"`` -> ``"block3/bn"``: the module path alone."""
    return name.split("/", 1)[-1].rpartition("/")[0]


def split_variables(variables) -> tuple[Params, dict]:
    """``(params, other collections)`` of a variables dict; raises without ``params``."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        got = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError("variables must be a dict with a 'params' collection, as model.init "
                         f"returns; got {got}")
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def create_state(model, tx: optax.GradientTransformation, sample: np.ndarray, *,
                 seed: int = 0, variables=None, aux: Any = None,
                 train_flag: str | None = None) -> TrainState:
    """A fresh ``TrainState``: step 0, new optimizer state.

    ``variables`` default to ``model.init`` with ``seed``; pass them to
    continue from an earlier stage (e.g. retraining after pruning).
    """
    variables = init_variables(model, sample, seed, train_flag) if variables is None \
        else variables
    params, collections = split_variables(variables)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      collections=dict(collections),
                      rng=jax.random.key_data(jax.random.key(seed + 1)), aux=aux)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy over the examples whose mask is 1.

    With ``label_smoothing`` e the target is ``(1 - e) * onehot + e / K``
    (Szegedy et al. 2016); e = 0 is the plain integer-label loss.
    """
    if label_smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        losses = optax.softmax_cross_entropy(logits, targets)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Softmax cross-entropy (``cross_entropy``) with the number of correct top-1 predictions."""
    def loss(logits, labels, mask):
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
        return cross_entropy(logits, labels, mask, label_smoothing), {"correct": correct}
    return loss


def forward(model, params, collections, x, *, train: bool, rng=None,
            train_flag: str | None = None):
    """Applies the model; returns ``(logits, collections)`` (updated in training)."""
    variables = {"params": params, **collections}
    rngs = {"dropout": rng} if rng is not None else {}
    mutable = [c for c in MUTABLE if c in collections] if train else []
    if mutable:
        logits, updates = model.apply(variables, x, mutable=mutable, rngs=rngs,
                                      **mode_kwargs(model, True, train_flag))
        return logits, {**collections, **updates}
    return model.apply(variables, x, rngs=rngs, **mode_kwargs(model, train, train_flag)), \
        collections


def batch_statistics(model, params, collections, images, *, preprocess=None,
                     batch_size: int = 250, train_flag: str | None = None, seed: int = 0
                     ) -> dict:
    """``collections`` with every ``batch_stats`` leaf set to the mean over ``images`` (in
    batches) of its batch statistic under ``params``: BatchNorm's running averages made
    again for weights that training ran otherwise (sampled, snapped).

    The model's own update ``new = m * old + (1 - m) * batch`` is affine in ``old``, whatever
    its momentum ``m``: one training-mode forward from zeros and one from ones give ``m`` and
    each batch's statistic (``batch = new_0 / (1 - m)``), so no momentum is assumed.
    """
    if "batch_stats" not in collections:
        return collections
    stats = collections["batch_stats"]
    zeros, ones = (jax.tree.map(fill, stats) for fill in (jnp.zeros_like, jnp.ones_like))

    @jax.jit
    def batch_values(x, rng):
        def updated(start):
            _, new = forward(model, params, {**collections, "batch_stats": start}, x,
                             train=True, rng=rng, train_flag=train_flag)
            return new["batch_stats"]
        from_zeros, from_ones = updated(zeros), updated(ones)
        return jax.tree.map(lambda a, b: a / jnp.maximum(1.0 - (b - a), 1e-12),
                            from_zeros, from_ones)

    total, count = jax.tree.map(jnp.zeros_like, stats), 0
    for i, batch in enumerate(zdata.batches(images, np.zeros(len(images), np.int32),
                                            batch_size, preprocess=preprocess, shuffle=False,
                                            remainder="drop")):
        values = batch_values(batch["image"], jax.random.fold_in(jax.random.key(seed), i))
        total, count = jax.tree.map(jnp.add, total, values), count + 1
    if not count:
        return collections
    return {**collections, "batch_stats": jax.tree.map(lambda t: t / count, total)}


def make_train_step(model, tx: optax.GradientTransformation, method=None,
                    mesh: Mesh | None = None, label_smoothing: float = 0.0,
                    loss: LossFn | None = None, train_flag: str | None = None):
    """Builds the jitted step ``(state, batch) -> (state, metrics)``.

    ``batch`` is ``{"image": (B, H, W, C), "label": targets, "mask": (B,)}``;
    metrics are the batch's mean loss and the loss's stats (by default,
    ``classification_loss(label_smoothing)``: the number of correct predictions).
    With ``method``, the state's params are its latent params and its
    ``penalty`` is added to the loss.
    """
    mesh = data_mesh() if mesh is None else mesh
    loss_of = classification_loss(label_smoothing) if loss is None else loss

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        dropout_rng, method_rng = jax.random.split(rng)

        def loss_fn(params):
            outputs, collections = forward(
                model, model_params(method, params, state.aux, method_rng), state.collections,
                batch["image"], train=True, rng=dropout_rng, train_flag=train_flag)
            value, stats = loss_of(outputs, batch["label"], batch["mask"])
            if method is not None:
                value = value + method.penalty({"latent": params, "aux": state.aux})
            return value, (stats, collections)

        (value, (stats, collections)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  collections=collections)
        return new_state, {"loss": value, **stats}

    replicated = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=(replicated, replicated))


def make_eval_step(model, method=None, mesh: Mesh | None = None, train_flag: str | None = None):
    """Builds the jitted ``(params, collections, aux, batch) -> (loss_sum, correct, count)``.

    All three are sums over the global batch's real (mask 1) examples.
    """
    mesh = data_mesh() if mesh is None else mesh

    def step(params, collections, aux, batch):
        logits, _ = forward(model, model_params(method, params, aux), collections,
                            batch["image"], train=False, train_flag=train_flag)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
        return jnp.sum(losses * batch["mask"]), jnp.sum(correct), jnp.sum(batch["mask"])

    replicated = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(replicated, replicated, replicated,
                                       NamedSharding(mesh, P("data"))),
                   out_shardings=replicated)


def evaluate(model, variables, images, labels, *, preprocess=None, aux=None, method=None,
             batch_size: int = 1000, mesh: Mesh | None = None, eval_step=None,
             train_flag: str | None = None) -> dict[str, float]:
    """Accuracy and mean loss over every example of ``(images, labels)``.

    ``variables``: ``{"params": ..., "batch_stats": ...}`` (params latent, with
    ``aux``, when ``method`` is given); ``preprocess``: images -> model input
    (default ``data.Preprocess()``). On several hosts each passes its own
    examples and the result covers all of them.
    """
    params, collections = split_variables(variables)
    mesh = data_mesh() if mesh is None else mesh
    eval_step = make_eval_step(model, method, mesh, train_flag) if eval_step is None \
        else eval_step
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for batch in zdata.batches(images, labels, batch_size, preprocess=preprocess,
                               shuffle=False, remainder="pad"):
        batch_loss, batch_correct, batch_count = eval_step(params, collections, aux,
                                                           shard_batch(batch, mesh))
        loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        count = count + batch_count
    count = max(float(count), 1.0)
    return {"accuracy": float(correct) / count, "loss": float(loss_sum) / count}


@dataclasses.dataclass
class FitResult:
    """The final state and one history row per completed epoch."""

    state: TrainState
    history: list[dict[str, float]]

    @property
    def variables(self) -> dict:
        """The trained variables on the host (params latent when a method was trained)."""
        return jax.device_get(self.state.variables)


def _checkpoint_manager(directory, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def latest_checkpoint_step(directory) -> int | None:
    """The step of the latest checkpoint ``fit`` would resume from in ``directory`` (None: none)."""
    if not os.path.isdir(directory):
        return None
    return _checkpoint_manager(directory).latest_step()


def _restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    step = manager.latest_step()
    if step is None:
        return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{manager.directory} holds a checkpoint (step {step}) of another model "
                         f"or other settings; give another folder or delete it "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


class Callback:
    """Hooks of ``loop``; each does nothing unless overridden.

    ``on_step(step, state, metrics, seen)`` after every step (``seen``: the
    examples of the epoch so far, over every host); ``on_epoch(row, state)``
    after every completed epoch (``row``: its history row, which it may
    extend); ``on_end(state)`` once, when the loop ends.
    """

    def on_step(self, step: int, state: TrainState, metrics: dict, seen: int) -> None:
        """After each step."""

    def on_epoch(self, row: dict, state: TrainState) -> None:
        """After each completed epoch."""

    def on_end(self, state: TrainState) -> None:
        """When the loop ends."""


class Checkpoints(Callback):
    """Saves an orbax checkpoint of the whole state every ``every`` steps and at step
    ``total``; the manager is made at the first save, so a run that fails before it leaves
    no folder (``manager``: one already open, e.g. after a restore)."""

    def __init__(self, directory, every: int, total: int,
                 manager: ocp.CheckpointManager | None = None):
        self.directory, self.every, self.total, self.manager = directory, every, total, manager

    def on_step(self, step, state, metrics, seen):
        """Saves at every ``every``-th step and at the last."""
        if step % self.every == 0 or step == self.total:
            self.manager = self.manager or _checkpoint_manager(self.directory)
            self.manager.save(step, args=ocp.args.StandardSave(state))

    def on_end(self, state):
        """Waits for the last save and closes the manager."""
        if self.manager is not None:
            self.manager.wait_until_finished()
            self.manager.close()


class ProgressBar(Callback):
    """A tqdm bar over the run's steps with the running loss (and accuracy) and examples/s;
    ``enabled=None`` shows it only on a terminal."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool | None,
                 global_batch: int):
        self.bar = tqdm(total=total, initial=min(initial, total), desc=desc,
                        disable=None if enabled is None else not enabled, leave=False,
                        dynamic_ncols=True)
        self.total, self.global_batch = total, global_batch
        self.sums, self.t0 = {}, time.perf_counter()

    def on_step(self, step, state, metrics, seen):
        """Advances the bar; every 50 steps shows the epoch's running statistics."""
        if seen == self.global_batch:  # a new epoch
            self.sums, self.t0 = {}, time.perf_counter()
        self.sums = {k: self.sums.get(k, 0.0) + v for k, v in metrics.items()}
        self.bar.update(1)
        if step % 50 == 0 or step == self.total:
            self.bar.set_postfix(_progress(self.sums, seen, self.global_batch,
                                           seen / (time.perf_counter() - self.t0)))

    def on_end(self, state):
        """Closes the bar."""
        self.bar.close()


class Evaluation(Callback):
    """Scores ``eval_data`` after every epoch with ``evaluate(state) -> {name: value}`` and
    adds each value to the epoch's row as ``test_<name>``."""

    def __init__(self, evaluate_state: Callable[[TrainState], dict]):
        self.evaluate_state = evaluate_state

    def on_epoch(self, row, state):
        """Adds the scores to ``row``."""
        row.update({f"test_{k}": v for k, v in self.evaluate_state(state).items()})


class EpochCall(Callback):
    """Calls ``on_epoch(row)`` with each epoch's finished history row (e.g. to log it)."""

    def __init__(self, on_epoch: Callable[[dict], None]):
        self.on_epoch_row = on_epoch

    def on_epoch(self, row, state):
        """Passes the row on."""
        self.on_epoch_row(row)


def loop(state: TrainState, train_step, epoch_batches: Callable[[int, int], Any], *,
         total: int, steps_per_epoch: int, global_batch: int,
         callbacks: tuple[Callback, ...] = ()) -> tuple[TrainState, list[dict]]:
    """Runs ``train_step`` from ``state.step`` to step ``total``.

    ``epoch_batches(epoch, start)`` yields the sharded batches of ``epoch``
    from its batch ``start``; ``global_batch`` is the examples of one step
    over every host. After each completed epoch the history row (epoch, mean
    training loss, each stat per example, examples/s) goes through the
    callbacks in order. An epoch whose mean loss is not finite raises
    ``FloatingPointError``. Returns the final state and the rows.
    """
    step = int(state.step)
    history = []
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        sums, seen, t0 = {}, 0, time.perf_counter()
        for batch in epoch_batches(epoch, start):
            state, metrics = train_step(state, batch)
            step += 1
            sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
            seen += global_batch
            for callback in callbacks:
                callback.on_step(step, state, metrics, seen)
            if step == total:
                break
        if step % steps_per_epoch == 0:
            row = {"epoch": epoch + 1, **_epoch_stats(sums, seen, global_batch),
                   "examples_per_s": seen / (time.perf_counter() - t0)}
            if not np.isfinite(row["train_loss"]):
                raise FloatingPointError(f"training diverged: the mean loss of epoch "
                                         f"{epoch + 1} is {row['train_loss']} (a lower learning "
                                         "rate, or finite starting weights?)")
            for callback in callbacks:
                callback.on_epoch(row, state)
            history.append(row)
    for callback in callbacks:
        callback.on_end(state)
    return state, history


def fit(model, tx: optax.GradientTransformation, train_data, *, epochs: int,
        variables=None, preprocess=None, batch_size: int = 128, seed: int = 0,
        method=None, aux: Any = None, eval_data=None, checkpoint_dir=None,
        checkpoint_every: int | None = None, max_steps: int | None = None,
        progress: bool | None = None, mesh: Mesh | None = None,
        desc: str = "train", on_epoch: Callable[[dict], None] | None = None,
        label_smoothing: float = 0.0, augment: bool = False,
        loss: LossFn | None = None, train_flag: str | None = None, task=None,
        callbacks: tuple[Callback, ...] = ()) -> FitResult:
    """Trains ``model`` for ``epochs`` epochs of ``train_data = (images, labels)``.

    The parts: ``make_train_step`` (the jitted step), ``loop`` (the epochs) and
    ``Callback``s: ``Checkpoints``, ``ProgressBar``, ``Evaluation`` and
    ``EpochCall``, made from the arguments below, then ``callbacks`` of your own.

    ``variables`` (default: ``model.init`` with ``seed``) is the full
    variables dict to start from; with ``method`` (``zylax.methods``), its
    params are the method's latent state and ``aux`` its constants
    (``method.init``'s ``"latent"["params"]`` ... see ``zylax.compress``).
    ``preprocess`` maps images to model input (default ``data.Preprocess()``,
    i.e. x / 255). ``train_flag`` names the model's training argument when it
    is not found by name (``nets.layers.mode_kwargs``).

    ``task`` (a ``zylax.tasks`` object) gives the loss and scores
    ``eval_data`` after each epoch (``task.evaluate``; its scores go into the
    row as ``test_<name>``); without it the loss is ``loss`` (a ``LossFn``;
    default softmax cross-entropy on integer labels with
    ``label_smoothing``) and ``eval_data`` is scored by ``evaluate``
    (classification: ``test_accuracy``, ``test_loss``).

    With ``checkpoint_dir`` the run saves an orbax checkpoint every
    ``checkpoint_every`` steps (default: each epoch) and at the end, and first
    resumes from the latest checkpoint found there; a resumed run reaches the
    same parameters bit for bit as an uninterrupted one. ``max_steps`` stops
    early (as if killed after that step). ``progress=None`` shows a bar only on
    a terminal. ``on_epoch`` is called with each epoch's history row (e.g. to
    log it) as soon as the epoch ends. ``augment`` applies the augmentation of
    the task's label kind (``data.LABEL_KINDS``; classification without a
    task): flips and shifts of the images, or scenes mirrored with their boxes
    and masks; evaluation never augments. An epoch whose
    mean loss is not finite stops the run with ``FloatingPointError``.
    """
    mesh = data_mesh() if mesh is None else mesh
    images, labels = train_data
    steps_per_epoch = zdata.num_batches(images.shape[0], batch_size, "drop")
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {images.shape[0]} examples")
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} is not divisible by {mesh.size} devices")
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    loss = task.loss() if task is not None and loss is None else loss
    sample = preprocess(images[:1])
    state = create_state(model, tx, sample, seed=seed, variables=variables, aux=aux,
                         train_flag=train_flag)
    _warn_about_training_mode(model, state, method, sample, train_flag)
    manager = None
    if checkpoint_dir is not None and os.path.isdir(checkpoint_dir):
        manager = _checkpoint_manager(checkpoint_dir)
        state = _restore_latest(manager, state)
    state = replicate(state, mesh)
    train_step = make_train_step(model, tx, method, mesh, label_smoothing, loss, train_flag)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps,
                                                                   epochs * steps_per_epoch)
    global_batch = batch_size * jax.process_count()  # the step's stats sum over every host

    kind = zdata.LABEL_KINDS[task.labels if task is not None else "classes"]
    augmenter = kind.augment if augment else None

    def epoch_batches(epoch: int, start: int):
        for batch in zdata.batches(images, labels, batch_size, preprocess=preprocess, seed=seed,
                                   epoch=epoch, remainder="drop", start=start,
                                   augmenter=augmenter):
            yield shard_batch(batch, mesh)

    made: list[Callback] = [ProgressBar(total, int(state.step), desc, progress, global_batch)]
    if checkpoint_dir is not None:
        made.append(Checkpoints(checkpoint_dir, checkpoint_every or steps_per_epoch, total,
                                manager))
    if eval_data is not None:
        made.append(Evaluation(_epoch_evaluation(model, eval_data, preprocess, method, mesh,
                                                 train_flag, task)))
    if on_epoch is not None:
        made.append(EpochCall(on_epoch))
    state, history = loop(state, train_step, epoch_batches, total=total,
                          steps_per_epoch=steps_per_epoch, global_batch=global_batch,
                          callbacks=(*made, *callbacks))
    return FitResult(state=state, history=history)


def _epoch_evaluation(model, eval_data, preprocess, method, mesh, train_flag, task):
    """``state -> scores`` of ``eval_data``: ``task.evaluate``, else ``evaluate`` with one
    compiled step reused every epoch."""
    if task is not None:
        return lambda state: task.evaluate(model, state.variables, *eval_data,
                                           preprocess=preprocess, method=method, aux=state.aux)
    eval_step = make_eval_step(model, method, mesh, train_flag)
    return lambda state: evaluate(model, state.variables, *eval_data, preprocess=preprocess,
                                  aux=state.aux, method=method, mesh=mesh, eval_step=eval_step)


_WARNED: set = set()


def _warn_about_training_mode(model, state: TrainState, method, sample, train_flag) -> None:
    """One warning per model class when training leaves BatchNorm or Dropout layers in
    inference mode (``nets.layers.training_mode_issues``)."""
    key = (type(model).__name__, train_flag)
    if key in _WARNED:
        return
    params = jax.eval_shape(lambda p, aux: model_params(method, p, aux), state.params, state.aux)
    issues = training_mode_issues(model, {"params": params, **state.collections},
                                  jnp.asarray(sample), train_flag)
    if issues:
        _WARNED.add(key)
        warnings.warn(f"{type(model).__name__}: training leaves {', '.join(issues[:3])}"
                      f"{' ...' if len(issues) > 3 else ''} in inference mode (no argument "
                      f"among {KNOWN_FLAGS} reaches them, nor is_mutable_collection("
                      f"'batch_stats')); name the model's flag with train_flag=", stacklevel=3)


def _epoch_stats(sums: dict, seen: int, batch_size: int) -> dict[str, float]:
    """Mean training loss per batch and each stat per example (``correct`` as accuracy)."""
    seen = max(seen, 1)
    row = {"train_loss": float(sums.get("loss", 0.0)) * batch_size / seen}
    for name, total in sums.items():
        if name != "loss":
            key = "train_accuracy" if name == "correct" else f"train_{name}_per_example"
            row[key] = float(total) / seen
    return row


def _progress(sums: dict, seen: int, batch_size: int, examples_per_s: float) -> dict[str, str]:
    stats = _epoch_stats(sums, seen, batch_size)
    shown = {"loss": f"{stats['train_loss']:.4f}"}
    if "train_accuracy" in stats:
        shown["acc"] = f"{stats['train_accuracy']:.4f}"
    return {**shown, "ex_s": f"{examples_per_s:.0f}"}


def epoch_logger(quiet: bool = False) -> Callable[[dict], None] | None:
    """An ``on_epoch`` callback printing one line per finished epoch, or None when quiet.

    The line (stage, epoch, mean training loss, examples/s, minutes since the
    logger was made, i.e. since training began) goes to stdout, flushed, so a
    log file or a notebook shows progress where the progress bar (a
    terminal's only) does not.
    """
    if quiet:
        return None
    start = time.perf_counter()

    def log(row: dict) -> None:
        if sys.stdout is None:  # started with stdout closed: print would drop it too
            return
        tqdm.write(f"{row.get('stage', 'train')} epoch {row['epoch']}: train loss "
                   f"{row['train_loss']:.4f}, {row['examples_per_s']:.0f} examples/s, "
                   f"{(time.perf_counter() - start) / 60:.1f} min")
        sys.stdout.flush()  # a log file sees the line now, not at exit
    return log


def fit_recipe(model, recipe: Recipe, train_data, *, preprocess=None, epochs: int | None = None,
               seed: int = 0, **kwargs) -> FitResult:
    """Trains ``model`` from scratch with ``recipe``'s optimizer, schedule and settings.

    ``preprocess`` defaults to ``x / 255`` padded to ``recipe.pad_to``;
    ``epochs`` overrides the recipe's; other keyword arguments go to ``fit``
    (``checkpoint_dir``, ``eval_data``, ``progress``, ``batch_size``, ...).
    """
    epochs = recipe.epochs if epochs is None else epochs
    preprocess = zdata.Preprocess(pad_to=recipe.pad_to) if preprocess is None else preprocess
    settings = {**recipe.fit_kwargs(), **kwargs}
    steps = epochs * zdata.num_batches(train_data[0].shape[0], settings["batch_size"], "drop")
    return fit(model, recipe.optimizer(steps), train_data, epochs=epochs, preprocess=preprocess,
               seed=seed, **settings)
