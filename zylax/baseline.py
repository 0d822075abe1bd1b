"""A model chosen by name or by factory, and its trained baseline, cached by its settings.

What ``zylax train`` and ``zylax compress`` start from, as library functions
that experiments and notebooks call too:

* ``choose_model(net=..., model=...)``: a registered net (``zylax.registry``)
  or the user's own ``package.module:factory``, with the training recipe,
  compression presets and file metadata that go with it (``ModelChoice``);
* ``train_baseline``: builds the model for the data's class count, picks its
  task (``zylax.tasks``) and trains it with its recipe (``train.fit_recipe``),
  resuming the checkpoint in its folder;
* ``baseline_dir``: the folder of a cached baseline, keyed by every setting
  that changes it and by the shapes of the model's variables;
* ``warm_start``: a model started from the matching layers of another's
  variables, with a one-line summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import sys
from typing import Any, Callable

import jax
import numpy as np

from zylax import data as zdata
from zylax import registry, tasks, train
from zylax.transforms.tree import named_leaves


class LabelKindError(ValueError):
    """The data's labels are not what the model's task trains on."""


@dataclasses.dataclass
class ModelChoice:
    """A named net or a user's factory, with its recipe, presets and file metadata.

    Attributes:
      factory: ``num_classes -> flax.linen.Module``.
      recipe: its training settings (``train.Recipe``).
      compression: its compression presets (``NetSpec.compression``; ``{}`` for
        a user's model).
      reference: published sizes per report stage.
      metadata: what its files record (``{"net": name}`` or ``{"model": spec}``).
      task: the task name, or None to pick it from the model (``tasks.for_model``).
    """

    factory: Callable[[int], Any]
    recipe: train.Recipe
    compression: dict
    reference: dict
    metadata: dict
    task: str | None = None


def choose_model(net: str | None = None, model: str | None = None, recipe: str | None = None,
                 task: str | None = None) -> ModelChoice:
    """The registered ``net``, or the user's ``model`` (``package.module:factory``, imported
    because the user named it; a default recipe of AdamW 1e-3 for 10 epochs).

    ``recipe`` names a registered net whose training recipe replaces the
    model's own. ``ValueError`` for an unknown name or a factory that cannot
    be imported.
    """
    borrowed = registry.get(recipe).recipe if recipe else None
    if model:
        factory = registry.import_factory(model)
        return ModelChoice(factory, borrowed or train.Recipe(epochs=10), {}, {},
                           {"model": model}, task)
    spec = registry.get(net)
    return ModelChoice(spec.factory, borrowed or spec.recipe, dict(spec.compression),
                       dict(spec.reference), {"net": net}, task or spec.task)


def task_for(choice: ModelChoice, model, train_data, dataset: zdata.Dataset | None = None):
    """The task object of ``model`` on ``train_data`` (``tasks.for_model``), with the recipe's
    label smoothing for classification; ``LabelKindError`` when the labels are of another
    kind than the task trains on (``dataset.labels``)."""
    task = tasks.for_model(model, train_data[0].shape[1:], choice.task)
    if dataset is not None and dataset.labels != task.labels:
        raise LabelKindError(f"{dataset.name} has {dataset.labels} labels; a {task.name} model "
                         f"trains on {task.labels} (pass another task or dataset)")
    if task.name == "classification" and choice.recipe.label_smoothing:
        task = tasks.Classification(choice.recipe.label_smoothing)
    return task


def build_model(choice: ModelChoice, train_data):
    """The model for the class count of ``train_data`` (segmentation counts the background)."""
    kind = tasks.get(choice.task).labels if choice.task else "classes"
    return choice.factory(zdata.num_classes(train_data[1], kind) + (choice.task == "segmentation"))


def train_baseline(choice: ModelChoice, train_data, preprocess: zdata.Preprocess, *,
                   epochs: int, seed: int, checkpoint_dir, dataset: zdata.Dataset | None = None,
                   before: Callable | None = None, quiet: bool = False, **kwargs):
    """Trains (or resumes) the baseline; returns ``(model, task, train.FitResult)``.

    ``checkpoint_dir`` is a folder, or ``(model, sample) -> folder`` (e.g.
    ``baseline_dir``); ``before(model, sample)`` runs first, and a dict it
    returns adds to ``fit``'s keyword arguments (e.g. ``variables`` to start
    from). ``quiet`` prints no progress. Other keyword arguments go to ``fit``.
    """
    model = build_model(choice, train_data)
    sample = preprocess(train_data[0][:1])
    if before is not None:
        kwargs.update(before(model, sample) or {})
    if callable(checkpoint_dir):
        checkpoint_dir = checkpoint_dir(model, sample)
    task = task_for(choice, model, train_data, dataset)
    result = train.fit_recipe(model, choice.recipe, train_data, preprocess=preprocess,
                              epochs=epochs, seed=seed, checkpoint_dir=checkpoint_dir,
                              progress=False if quiet else None, task=task,
                              on_epoch=train.epoch_logger(quiet), **kwargs)
    return model, task, result


def model_code_digest(model) -> str:
    """A hash of the source of the module that defines ``model``'s class ("" when Python
    cannot find it, e.g. a class typed into a notebook)."""
    try:
        source = inspect.getsource(sys.modules[type(model).__module__])
    except (KeyError, OSError, TypeError):
        return ""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def baseline_key(choice: ModelChoice, *, data: str, seed: int, epochs: int,
                 max_examples: int | None, variables=None, code: str = "") -> str:
    """A hash of every setting that changes the baseline (model, data, seed, epochs, recipe,
    prefix), of the shapes and dtypes of ``variables`` (the model's, as ``init`` makes them)
    and of ``code`` (``model_code_digest``), so that a change to the model's code trains a
    new one."""
    shapes = {name: [list(np.shape(leaf)), str(np.dtype(leaf.dtype))]
              for name, leaf in named_leaves(variables or {}).items()}
    settings = {"model": choice.metadata, "data": data, "seed": seed, "epochs": epochs,
                "max_examples": max_examples, "recipe": dataclasses.asdict(choice.recipe),
                "shapes": shapes, "code": code}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def baseline_dir(workdir: str, choice: ModelChoice, *, data: str, seed: int, epochs: int,
                 max_examples: int | None, train_flag: str | None = None) -> Callable:
    """``(model, sample) -> folder``: the checkpoint folder of this baseline under ``workdir``
    (``baseline-<baseline_key>``, keyed by the settings, the model's shapes and its module's
    source); prints whether it reuses (or resumes) one or trains anew."""
    def folder(model, sample) -> str:
        shapes = jax.eval_shape(lambda: train.init_variables(model, sample, 0, train_flag))
        key = baseline_key(choice, data=data, seed=seed, epochs=epochs,
                           max_examples=max_examples, variables=shapes,
                           code=model_code_digest(model))
        path = os.path.abspath(os.path.join(workdir, f"baseline-{key}"))
        if os.path.isdir(path):
            print(f"baseline: reusing the checkpoint in {path} (same settings, model code and "
                  "shapes; delete it to train anew)")
        else:
            print(f"baseline: training; its checkpoint goes to {path} (a later run with the "
                  "same settings, model code and shapes reuses it)")
        return path
    return folder


def warm_start(model, sample, donor: dict, seed: int) -> tuple[dict, str]:
    """``(variables, summary)``: ``model``'s fresh variables with the layers of ``donor`` that
    match copied in (``train.warm_start``), and a line saying what was copied."""
    fresh = train.init_variables(model, sample, seed)
    variables, copied = train.warm_start(fresh, donor)
    copied = set(copied)
    params = named_leaves(fresh["params"])
    kept = {name.split("/")[0] for name in params if f"params/{name}" not in copied}
    size = sum(np.size(leaf) for leaf in params.values())
    moved = sum(np.size(leaf) for name, leaf in params.items() if f"params/{name}" in copied)
    fresh_layers = (f"{len(kept)} layers start fresh ({', '.join(sorted(kept)[:8])}"
                    f"{', ...' if len(kept) > 8 else ''})" if kept else "no layer starts fresh")
    return variables, (f"{len(copied)} leaves, {moved:,} of {size:,} parameters; "
                       f"{fresh_layers}")
