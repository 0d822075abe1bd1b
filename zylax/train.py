"""A jitted, data-parallel, resumable training loop.

The state is a plain pytree (``TrainState``) holding everything a run needs to
continue bit-identically: parameters, optimizer state (which is where pruning
masks live), BatchNorm statistics, the step, the base PRNG key and ``aux``,
constant arrays a compression transform reads (weight-sharing indices, ...).

Compression composes with training through ``transform``: the loss evaluates
``model.apply({"params": transform(params)}, x)`` (or ``transform(params, aux)``
when ``aux`` is given), inside the differentiated function, so gradients flow
through the transform (and its straight-through estimators) to the latent
parameters that the optimizer updates.

Data parallelism: every batch is split over a one-axis ``Mesh`` of all devices
(``NamedSharding(mesh, P("data"))``); the state is replicated. The same code
runs on one CPU, several GPUs or a TPU slice. On several hosts, call
``jax.distributed.initialize()`` first; each host then feeds its own slice of
the global batch (``jax.make_array_from_process_local_data`` assembles it), so
give each host a different ``seed`` offset of the data or shard the files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from zylax import data as zdata

Params = Any
Transform = Callable[..., Params]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to resume: a pytree, checkpointed whole."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    batch_stats: Any
    rng: jax.Array
    aux: Any


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


def apply_transform(transform: Transform | None, params: Params, aux: Any) -> Params:
    """``transform(params)``, or ``transform(params, aux)`` when aux is not None."""
    if transform is None:
        return params
    return transform(params) if aux is None else transform(params, aux)


def init_variables(model, sample: np.ndarray, seed: int) -> dict[str, Any]:
    """``model.init`` on one sample batch; returns ``{"params", "batch_stats"}``."""
    variables = model.init(jax.random.key(seed), jnp.asarray(sample), train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_state(model, tx: optax.GradientTransformation, sample: np.ndarray, *,
                 seed: int = 0, params: Params = None, batch_stats: Any = None,
                 aux: Any = None) -> TrainState:
    """A fresh ``TrainState``: step 0, new optimizer state.

    ``params``/``batch_stats`` default to ``model.init`` with ``seed``; pass them
    to continue from an earlier stage (e.g. retraining after pruning).
    """
    variables = init_variables(model, sample, seed)
    params = variables["params"] if params is None else params
    batch_stats = variables["batch_stats"] if batch_stats is None else batch_stats
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      batch_stats=batch_stats,
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


def forward(model, params, batch_stats, x, *, train: bool, rng=None):
    """Applies the model; returns ``(logits, new_batch_stats)``."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    rngs = {"dropout": rng} if rng is not None else {}
    if train and batch_stats:
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, updates["batch_stats"]
    return model.apply(variables, x, train=train, rngs=rngs), batch_stats


def make_train_step(model, tx: optax.GradientTransformation, transform: Transform | None = None,
                    mesh: Mesh | None = None, label_smoothing: float = 0.0):
    """Builds the jitted step ``(state, batch) -> (state, metrics)``.

    ``batch`` is ``{"image": (B, H, W, C), "label": (B,), "mask": (B,)}``; metrics
    are the batch's mean (smoothed) loss and its number of correct predictions.
    """
    mesh = data_mesh() if mesh is None else mesh

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_fn(params):
            model_params = apply_transform(transform, params, state.aux)
            logits, batch_stats = forward(model, model_params, state.batch_stats,
                                          batch["image"], train=True, rng=rng)
            loss = cross_entropy(logits, batch["label"], batch["mask"], label_smoothing)
            return loss, (logits, batch_stats)

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["mask"])
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  batch_stats=batch_stats)
        return new_state, {"loss": loss, "correct": correct}

    replicated = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=(replicated, replicated))


def make_eval_step(model, transform: Transform | None = None, mesh: Mesh | None = None):
    """Builds the jitted ``(params, batch_stats, aux, batch) -> (loss_sum, correct)``."""
    mesh = data_mesh() if mesh is None else mesh

    def step(params, batch_stats, aux, batch):
        logits, _ = forward(model, apply_transform(transform, params, aux), batch_stats,
                            batch["image"], train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
        return jnp.sum(losses * batch["mask"]), jnp.sum(correct)

    replicated = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(replicated, replicated, replicated,
                                       NamedSharding(mesh, P("data"))),
                   out_shardings=replicated)


def evaluate(model, params, images, labels, *, name: str, batch_stats=None, aux=None,
             transform: Transform | None = None, batch_size: int = 1000,
             pad_to: int | None = None, mesh: Mesh | None = None,
             eval_step=None) -> dict[str, float]:
    """Accuracy and mean loss over every example of ``(images, labels)``."""
    mesh = data_mesh() if mesh is None else mesh
    eval_step = make_eval_step(model, transform, mesh) if eval_step is None else eval_step
    loss_sum, correct = 0.0, 0.0
    for batch in zdata.batches(images, labels, batch_size, name=name, shuffle=False,
                               remainder="pad", pad_to=pad_to):
        l, c = eval_step(params, batch_stats or {}, aux, shard_batch(batch, mesh))
        loss_sum, correct = loss_sum + l, correct + c
    n = images.shape[0]
    return {"accuracy": float(correct) / n, "loss": float(loss_sum) / n}


@dataclasses.dataclass
class FitResult:
    """The final state and one history row per completed epoch."""

    state: TrainState
    history: list[dict[str, float]]


def _checkpoint_manager(directory, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    step = manager.latest_step()
    if step is None:
        return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def fit(model, tx: optax.GradientTransformation, train_data, *, name: str, epochs: int,
        batch_size: int = 128, seed: int = 0, transform: Transform | None = None,
        aux: Any = None, params: Params = None, batch_stats: Any = None,
        pad_to: int | None = None, eval_data=None, checkpoint_dir=None,
        checkpoint_every: int | None = None, max_steps: int | None = None,
        progress: bool | None = None, mesh: Mesh | None = None,
        desc: str = "train", on_epoch: Callable[[dict], None] | None = None,
        label_smoothing: float = 0.0, augment: bool = False) -> FitResult:
    """Trains ``model`` for ``epochs`` epochs of ``train_data = (images, labels)``.

    With ``checkpoint_dir`` the run saves an orbax checkpoint every
    ``checkpoint_every`` steps (default: each epoch) and at the end, and first
    resumes from the latest checkpoint found there; a resumed run reaches the
    same parameters bit for bit as an uninterrupted one. ``max_steps`` stops
    early (as if killed after that step). ``progress=None`` shows a bar only on
    a terminal. ``on_epoch`` is called with each epoch's history row (e.g. to
    log it) as soon as the epoch ends. ``label_smoothing`` smooths the
    training targets (``cross_entropy``) and ``augment`` flips and shifts the
    training images (``data.augment``); evaluation uses neither.
    """
    mesh = data_mesh() if mesh is None else mesh
    images, labels = train_data
    steps_per_epoch = zdata.num_batches(images.shape[0], batch_size, "drop")
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {images.shape[0]} examples")
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} is not divisible by {mesh.size} devices")
    sample = zdata.preprocess(images[:1], name, pad_to)
    state = create_state(model, tx, sample, seed=seed, params=params,
                         batch_stats=batch_stats, aux=aux)
    manager = None if checkpoint_dir is None else _checkpoint_manager(checkpoint_dir)
    if manager is not None:
        state = _restore_latest(manager, state)
    checkpoint_every = checkpoint_every or steps_per_epoch
    state = replicate(state, mesh)
    train_step = make_train_step(model, tx, transform, mesh, label_smoothing)
    eval_step = make_eval_step(model, transform, mesh) if eval_data is not None else None

    total = epochs * steps_per_epoch if max_steps is None else min(max_steps,
                                                                   epochs * steps_per_epoch)
    step = int(state.step)
    history = []
    bar = tqdm(total=total, initial=min(step, total), desc=desc,
               disable=None if progress is None else not progress, leave=False,
               dynamic_ncols=True)
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        loss_sum, correct, seen, t0 = 0.0, 0.0, 0, time.perf_counter()
        for batch in zdata.batches(images, labels, batch_size, name=name, seed=seed, epoch=epoch,
                                   remainder="drop", pad_to=pad_to, start=start,
                                   augment_images=augment):
            state, metrics = train_step(state, shard_batch(batch, mesh))
            step += 1
            loss_sum, correct, seen = loss_sum + metrics["loss"], correct + metrics["correct"], \
                seen + batch_size
            bar.update(1)
            if step % 50 == 0 or step == total:
                done = step - epoch * steps_per_epoch - start
                bar.set_postfix(loss=f"{float(loss_sum) / max(done, 1):.4f}",
                                acc=f"{float(correct) / seen:.4f}",
                                ex_s=f"{seen / (time.perf_counter() - t0):.0f}")
            if manager is not None and (step % checkpoint_every == 0 or step == total):
                manager.save(step, args=ocp.args.StandardSave(state))
            if step == total:
                break
        if step % steps_per_epoch == 0:
            row = {"epoch": epoch + 1, "train_loss": float(loss_sum) * batch_size / max(seen, 1),
                   "train_accuracy": float(correct) / max(seen, 1),
                   "examples_per_s": seen / (time.perf_counter() - t0)}
            if eval_data is not None:
                metrics = evaluate(model, state.params, *eval_data, name=name,
                                   batch_stats=state.batch_stats, aux=state.aux,
                                   transform=transform, pad_to=pad_to, mesh=mesh,
                                   eval_step=eval_step)
                row.update(test_accuracy=metrics["accuracy"], test_loss=metrics["loss"])
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    return FitResult(state=state, history=history)
