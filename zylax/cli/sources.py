"""Where a command's model, data and baseline come from: ``--net``/``--model`` (a
``baseline.ModelChoice``), ``--from FILE`` (a ``modelfile.ModelFile``), and the cached baseline
trained for them (``zylax.baseline``)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys

import numpy as np

from zylax import baseline, compress, export, modelfile, registry, tasks, train
from zylax import data as zdata
from zylax.cli.checks import (UsageError, check_pad_to, positive, usage)


def did_you_mean(name: str) -> str:
    """``" (did you mean 'x'?)"`` for the registered net closest to ``name``, else ``""``."""
    close = difflib.get_close_matches(name.lower(), sorted(registry.NETS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_common(args):
    """The model, data and settings shared by train and compress: a ``baseline.ModelChoice``."""
    args.data = args.data or zdata.names()[0]
    if args.data not in zdata.names():
        raise UsageError(f"unknown dataset {args.data!r}; choose one of {zdata.names()}")
    if args.model and args.net:
        raise UsageError("give --net or --model, not both")
    if not args.model:
        args.net = args.net or "lenet300"
        if args.net not in registry.NETS:
            raise UsageError(f"unknown net {args.net!r}{did_you_mean(args.net)}; choose one "
                             f"of {sorted(registry.NETS)}")
    if args.recipe and args.recipe not in registry.NETS:
        raise UsageError(f"--recipe {args.recipe!r} is not a registered net"
                         f"{did_you_mean(args.recipe)}; choose one of {sorted(registry.NETS)}")
    positive("--seed", args.seed, zero_ok=True)
    positive("--batch-size", args.batch_size, limit=1 << 16)
    positive("--max-examples", args.max_examples)
    positive("--max-test-examples", args.max_test_examples)
    try:
        choice = baseline.choose_model(args.net, args.model, args.recipe, args.task)
        built = choice.factory(10)  # a factory that cannot build a model fails here, not later
    except Exception as err:  # noqa: BLE001 - any error of the user's factory is a usage error
        raise UsageError(f"--model {args.model or args.net}: "
                         f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    if args.batch_size:
        choice.recipe = dataclasses.replace(choice.recipe, batch_size=args.batch_size)
    if getattr(args, "augment", None) is not None:
        choice.recipe = dataclasses.replace(choice.recipe, augment=args.augment)
    if args.max_examples is not None and args.max_examples < choice.recipe.batch_size:
        raise UsageError(f"--max-examples {args.max_examples} is smaller than one batch "
                         f"({choice.recipe.batch_size}); lower --batch-size")
    labels = zdata.get(args.data).labels
    needed = None if choice.task is None else tasks.get(choice.task).labels
    if needed is not None and needed != labels:
        wanted = [n for n in zdata.names() if zdata.get(n).labels == needed]
        raise UsageError(f"{choice.task} needs {zdata.LABEL_KINDS[needed].description}: train "
                         f"on --data {wanted[0] if wanted else '(none registered)'}, not "
                         f"{args.data}")
    if labels == "scenes" and choice.task is None and args.net:
        raise UsageError(f"--data {args.data} has boxes and masks, not class labels; use a "
                         "detection or segmentation net")
    with usage():
        tasks.check_model(built, choice.task)
    return choice


def load_data(args):
    """Train and test splits of ``--data``, cut to ``--max-examples``/``--max-test-examples``."""
    train_data, test_data = zdata.load(args.data, "train"), zdata.load(args.data, "test")
    with usage("--max-examples "):
        train_data = zdata.prefix(train_data, args.max_examples)
    with usage("--max-test-examples "):
        test_data = zdata.prefix(test_data, args.max_test_examples)
    return train_data, test_data


def trained_model(args, given, choice, check=None):
    """``(model, task, variables, train_data, test_data, preprocess)`` of the ``--from`` file
    (``given``), else of the baseline trained (or reused) for ``choice``; ``check(model,
    variables, sample)`` runs on the model, its variables and one input before any
    training."""
    dataset = zdata.get(args.data)
    if given:
        if check is not None:
            blank = np.zeros((1, *dataset.image_shape), np.uint8)
            check(given.model, given.variables, given.preprocess(blank))
        _, test_data = scoring_split(given, None, args.max_test_examples)  # checks it first
        train_data = dataset.load("train", download=False)  # named by the file: no download
        with usage("--max-examples "):
            train_data = zdata.prefix(train_data, args.max_examples)
        return (given.model, given.task, given.variables, train_data, test_data,
                given.preprocess)
    epochs = args.baseline_epochs or choice.recipe.epochs
    preprocess = dataset.preprocessing(choice.recipe.pad_to)
    check_pad_to(choice.recipe, args)
    train_data, test_data = load_data(args)
    name = args.net or args.model.replace(":", ".")
    workdir = args.workdir or os.path.join("runs", f"{name}-{args.data}-seed{args.seed}")
    folder = baseline.baseline_dir(workdir, choice, data=args.data, seed=args.seed,
                                   epochs=epochs, max_examples=args.max_examples,
                                   train_flag=args.train_flag)

    def before(model, sample):
        if check is not None:
            check(model, train.init_variables(model, sample, 0, args.train_flag), sample)
    with usage(kind=baseline.LabelKindError):
        model, task, trained = baseline.train_baseline(
            choice, train_data, preprocess, epochs=epochs, seed=args.seed,
            checkpoint_dir=folder, dataset=dataset, quiet=args.quiet, before=before)
    return model, task, trained.variables, train_data, test_data, preprocess


def adopt_baseline_file(args):
    """``--from FILE``: the trained file's model, data and task stand for --net/--data/--task.

    Returns the ``modelfile.ModelFile``, or None without ``--from``. A file made
    from a user's model needs ``--model``, as evaluate and export do.
    """
    path = args.baseline_file
    if path is None:
        return None
    if os.path.isdir(path):
        inside = os.path.join(path, "model.zyl")
        hint = f"; did you mean {inside}?" if os.path.isfile(inside) else ""
        raise UsageError(f"--from {path} is a folder, not a .zyl file{hint}")
    if not os.path.exists(path):
        raise UsageError(f"--from {path}: no such file")
    if not os.path.isfile(path):
        raise UsageError(f"--from {path} is not a regular file (a device, FIFO or socket)")
    given = [flag for flag, value in (("--net", args.net), ("--data", args.data),
                                      ("--baseline-epochs", args.baseline_epochs),
                                      ("--workdir", args.workdir)) if value is not None]
    if given:
        raise UsageError(f"--from {path} is the trained model; drop {', '.join(given)}")
    loaded = model_file(path, args.model, args.command, None)
    compressed = sorted({method for method in export.stored_methods(loaded.header).values()
                         if method != "raw"})
    if compressed:
        raise UsageError(f"--from {path} is already compressed ({', '.join(compressed)} "
                         "leaves); give the trained float file (zylax train's model.zyl)")
    if args.task is not None and args.task != loaded.task.name:
        raise UsageError(f"--task {args.task}: {path} is a {loaded.task.name} model")
    if loaded.metadata.data is None:
        raise UsageError(f"--from {path} records no dataset to retrain on (metadata 'data')")
    if args.model is None:
        args.net = loaded.metadata.net
    args.data, args.task = loaded.metadata.data, loaded.task.name
    return loaded


def model_file(path: str, spec: str | None, command: str, max_decoded_bytes: int | None):
    """``path`` run by the model named with ``--model`` (``spec``), else by the registered net
    the file records; a file made from a user's model without ``--model`` is a usage error
    quoting its recorded spec. Nothing the file names is imported."""
    factory = None
    if spec is not None:
        with usage(f"--model {spec}: "):
            factory = registry.import_factory(spec)  # imported because the user named it
    try:
        loaded = modelfile.load_model_file(path, model=factory,
                                           max_decoded_bytes=max_decoded_bytes)
    except modelfile.ModelNeededError as err:
        raise UsageError(str(err)) from None
    except TypeError as err:
        raise UsageError(f"--model {spec}: {err}") from None
    except modelfile.ModelMismatchError as err:
        raise RuntimeError(str(err)) from None
    recorded = loaded.metadata.model or loaded.metadata.net
    built = compress.model_hint(loaded.model).get("model")  # the class the factory built
    if spec is not None and recorded is not None and recorded not in (spec, built):
        print(f"zylax {command}: warning: {path} records the model {recorded!r}; using "
              f"--model {spec} as you named it", file=sys.stderr)
    return loaded


def scoring_split(loaded, name: str | None, max_examples: int | None):
    """The test split the file is scored on (``modelfile.scoring_data``), cut to a prefix."""
    try:
        name, split = modelfile.scoring_data(loaded, name)
    except modelfile.DatasetNeededError as err:
        raise UsageError(str(err)) from None
    except modelfile.ModelMismatchError as err:
        raise RuntimeError(str(err)) from None
    with usage("--max-examples "):
        return name, zdata.prefix(split, max_examples)
