"""The ``zylax`` command line: ``train``, ``compress``, ``evaluate``, ``inspect``, ``export``.

Every argument is checked before any data is loaded or any training runs.
Errors are one line on stderr: exit code 2 for a bad argument, 1 for a
failure at run time (``ZYLAX_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

from zylax import data as zdata
from zylax.nets import layers


class UsageError(Exception):
    """A bad command-line argument (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr, as every other failure is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(name: str, value, *, zero_ok: bool = False, limit: int = 1 << 31) -> None:
    if value is not None and not ((0 if zero_ok else 1) <= value <= limit):
        raise UsageError(f"{name} must be {'>= 0' if zero_ok else '>= 1'} and <= {limit}, "
                         f"got {value}")


def _check_out_file(path: str, flag: str = "--out") -> None:
    """The output path must be a writable file location: tried with a temp file; an
    existing path must be a regular file (never a device, FIFO or folder)."""
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory or empty; give a file path")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UsageError(f"{flag} {path} exists and is not a regular file (a device, FIFO or "
                         "socket); give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".zylax-probe-"):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write there ({err.strerror})") from None


@dataclasses.dataclass
class ModelChoice:
    """A named net or an imported factory, with its recipe, preset and file metadata."""

    factory: object
    recipe: object
    compression: dict
    reference: dict
    metadata: dict
    task: str | None = None


def _model_choice(args) -> ModelChoice:
    from zylax import registry, train

    borrowed = registry.get(args.recipe).recipe if args.recipe else None
    if args.model:
        factory = registry.import_factory(args.model)
        return ModelChoice(factory, borrowed or train.Recipe(epochs=10), {}, {},
                           {"model": args.model}, args.task)
    spec = registry.get(args.net)
    return ModelChoice(spec.factory, borrowed or spec.recipe, dict(spec.compression),
                       dict(spec.reference), {"net": args.net}, args.task or spec.task)


def _did_you_mean(name: str) -> str:
    """``" (did you mean 'x'?)"`` for the registered net closest to ``name``, else ``""``."""
    from zylax import registry

    close = difflib.get_close_matches(name.lower(), sorted(registry.NETS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_common(args) -> ModelChoice:
    from zylax import registry, tasks

    args.data = args.data or zdata.DATASETS[0]
    if args.data not in zdata.DATASETS:
        raise UsageError(f"unknown dataset {args.data!r}; choose one of {zdata.DATASETS}")
    if args.model and args.net:
        raise UsageError("give --net or --model, not both")
    if not args.model:
        args.net = args.net or "lenet300"
        if args.net not in registry.NETS:
            raise UsageError(f"unknown net {args.net!r}{_did_you_mean(args.net)}; choose one "
                             f"of {sorted(registry.NETS)}")
    if args.recipe and args.recipe not in registry.NETS:
        raise UsageError(f"--recipe {args.recipe!r} is not a registered net"
                         f"{_did_you_mean(args.recipe)}; choose one of {sorted(registry.NETS)}")
    _positive("--seed", args.seed, zero_ok=True)
    _positive("--batch-size", args.batch_size, limit=1 << 16)
    _positive("--max-examples", args.max_examples)
    _positive("--max-test-examples", args.max_test_examples)
    try:
        choice = _model_choice(args)
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
    scenes = args.data in zdata.SCENE_DATASETS
    if choice.task in ("detection", "segmentation") and not scenes:
        raise UsageError(f"{choice.task} needs boxes and masks: train on --data "
                         f"{zdata.SCENE_DATASETS[0]}, not {args.data}")
    if scenes and choice.task in (None, "classification") and args.net:
        raise UsageError(f"--data {args.data} has boxes and masks, not class labels; use a "
                         "detection or segmentation net")
    try:
        tasks.check_model(built, choice.task)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return choice


def _prefix(split, count: int | None, flag: str = "--max-examples"):
    """The first ``count`` examples of ``(images, labels)`` (all when count is None).

    A ``count`` above the split's size is a ``UsageError`` naming ``flag``.
    """
    if not count:
        return split
    if count > split[0].shape[0]:
        raise UsageError(f"{flag} {count} exceeds the {split[0].shape[0]:,} examples there are")
    keep = np.arange(count)
    return split[0][keep], zdata.take(split[1], keep)


def load_data(name: str, max_examples: int | None = None, max_test_examples: int | None = None):
    """Train and test splits, each optionally cut to a prefix."""
    return (_prefix(zdata.load(name, "train"), max_examples),
            _prefix(zdata.load(name, "test"), max_test_examples, "--max-test-examples"))


def _task(choice: ModelChoice, model, train_data):
    """The task object of ``model`` on this data (``zylax.tasks.for_model``)."""
    from zylax import tasks

    task = tasks.for_model(model, train_data[0].shape[1:], choice.task)
    if task.name == "classification" and isinstance(train_data[1], dict):
        raise UsageError("the data has boxes and masks, not class labels; pass --task "
                         "detection or segmentation")
    if task.name == "classification" and choice.recipe.label_smoothing:
        task = tasks.Classification(choice.recipe.label_smoothing)
    return task


def _scores(metrics: dict, task) -> str:
    """``accuracy 0.9012`` or ``AP50 0.8123, mAP 0.5432`` (the task's metric first)."""
    names = [task.metric] + [k for k in metrics if k != task.metric and k != "loss"]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in names)


def baseline_key(choice: ModelChoice, args, epochs: int, variables=None) -> str:
    """A hash of every setting that changes the baseline (model, data, seed, epochs, recipe, ...)
    and of the shapes and dtypes of ``variables`` (the model's, as ``init`` makes them), so that
    a change to the model's code that changes a shape trains a new baseline."""
    from zylax.transforms.tree import named_leaves

    shapes = {name: [list(np.shape(leaf)), str(np.dtype(leaf.dtype))]
              for name, leaf in named_leaves(variables or {}).items()}
    settings = {"model": choice.metadata, "data": args.data, "seed": args.seed, "epochs": epochs,
                "max_examples": args.max_examples, "recipe": dataclasses.asdict(choice.recipe),
                "shapes": shapes}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def epoch_logger(quiet: bool):
    """An ``on_epoch`` callback printing one line per finished epoch, or None when quiet.

    The line (stage, epoch, mean training loss, examples/s, minutes since the
    logger was made, i.e. since training began) goes to stdout, flushed, so a
    log file or a notebook shows progress where the progress bar (a
    terminal's only) does not.
    """
    if quiet:
        return None
    import time

    from tqdm import tqdm

    start = time.perf_counter()

    def log(row: dict) -> None:
        if sys.stdout is None:  # started with stdout closed: print would drop it too
            return
        tqdm.write(f"{row.get('stage', 'train')} epoch {row['epoch']}: train loss "
                   f"{row['train_loss']:.4f}, {row['examples_per_s']:.0f} examples/s, "
                   f"{(time.perf_counter() - start) / 60:.1f} min")
        sys.stdout.flush()  # a log file sees the line now, not at exit
    return log


def _baseline(choice: ModelChoice, args, train_data, preprocess, epochs: int, checkpoint_dir,
              before=None, **kwargs):
    """Trains (or resumes) the baseline.

    ``before(model, sample)`` runs first; a dict it returns adds to ``fit``'s
    keyword arguments (e.g. ``variables`` to start from). ``checkpoint_dir``
    is a folder, or ``(model, sample) -> folder``.
    """
    from zylax import train

    # segmentation models output every label, the background included
    model = choice.factory(zdata.num_classes(train_data[1]) + (choice.task == "segmentation"))
    sample = preprocess(train_data[0][:1])
    if before is not None:
        kwargs.update(before(model, sample) or {})
    if callable(checkpoint_dir):
        checkpoint_dir = checkpoint_dir(model, sample)
    task = _task(choice, model, train_data)
    result = train.fit_recipe(model, choice.recipe, train_data, preprocess=preprocess,
                              epochs=epochs, seed=args.seed, checkpoint_dir=checkpoint_dir,
                              progress=False if args.quiet else None, loss=task.loss(),
                              on_epoch=epoch_logger(args.quiet), **kwargs)
    return model, task, result


def _warm_start(model, sample, donor: dict, args) -> dict:
    """Fit keyword arguments that start ``model`` from the matching layers of ``donor``."""
    from zylax import train
    from zylax.transforms.tree import named_leaves

    fresh = train.init_variables(model, sample, args.seed)
    variables, copied = train.warm_start(fresh, donor)
    copied = set(copied)
    params = named_leaves(fresh["params"])
    kept = {name.split("/")[0] for name in params if f"params/{name}" not in copied}
    size = sum(np.size(leaf) for leaf in params.values())
    moved = sum(np.size(leaf) for name, leaf in params.items() if f"params/{name}" in copied)
    fresh_layers = (f"{len(kept)} layers start fresh ({', '.join(sorted(kept)[:8])}"
                    f"{', ...' if len(kept) > 8 else ''})" if kept else "no layer starts fresh")
    print(f"warm start from {args.init_from}: {len(copied)} leaves, {moved:,} of {size:,} "
          f"parameters; {fresh_layers}")
    return {"variables": variables}


def _check_pad_to(recipe, args, images: np.ndarray) -> None:
    """A recipe that pads to less than the images (e.g. a lent ``--recipe``): a usage error."""
    if recipe.pad_to is not None and recipe.pad_to < max(images.shape[1:3]):
        source = f"--recipe {args.recipe}" if args.recipe else "the recipe"
        raise UsageError(f"{source} pads images to {recipe.pad_to}x{recipe.pad_to}, but the "
                         f"{args.data} images are {images.shape[1]}x{images.shape[2]}")


def cmd_train(args) -> None:
    """Trains a baseline; prints its test scores, checkpoint folder and ``model.zyl`` file."""
    from zylax import archive, tasks, train

    choice = _check_common(args)
    _positive("--epochs", args.epochs)
    _positive("--max-steps", args.max_steps)
    _check_learning_rate(args.learning_rate)
    if args.learning_rate is not None:
        choice.recipe = dataclasses.replace(choice.recipe, learning_rate=args.learning_rate)
    if os.path.isfile(args.out):
        raise UsageError(f"--out {args.out} is a file; give a folder")
    epochs = args.epochs or choice.recipe.epochs
    checkpoint_dir = os.path.join(os.path.abspath(args.out), "checkpoints")
    resumed = train.latest_checkpoint_step(checkpoint_dir)
    donor = None
    if args.init_from is not None and resumed is None:
        donor, _ = archive.load(args.init_from)  # a bad file fails before the data loads
    train_data, test_data = load_data(args.data, args.max_examples, args.max_test_examples)
    _check_pad_to(choice.recipe, args, train_data[0])
    preprocess = zdata.preprocessing(args.data, choice.recipe.pad_to)
    print(f"recipe{f' of {args.recipe}' if args.recipe else ''}: "
          f"{dataclasses.replace(choice.recipe, epochs=epochs)}")
    if resumed is not None:
        print(f"resuming from step {resumed} of the checkpoint in {checkpoint_dir} (another "
              "--out starts afresh)")
    before = None
    if donor is not None:
        before = lambda model, sample: _warm_start(model, sample, donor, args)
    elif args.init_from is not None:
        print(f"--init-from {args.init_from} is not used: the run resumes its checkpoint")
    model, task, result = _baseline(choice, args, train_data, preprocess, epochs,
                                    checkpoint_dir, before=before, max_steps=args.max_steps)
    metrics = task.evaluate(model, result.variables, *test_data, preprocess=preprocess)
    print(f"{args.net or args.model} on {args.data}: test {_scores(metrics, task)} "
          f"after {int(result.state.step)} steps")
    path = os.path.join(args.out, "model.zyl")
    archive.save(path, result.variables, metadata=tasks.file_metadata(
        task, preprocess, *train_data, {**choice.metadata, "data": args.data}))
    print(f"checkpoint: {checkpoint_dir}")
    print(f"model file: {path} (float weights; zylax evaluate, export and compress --from "
          "take it)")


def _check_chain(chain, params) -> None:
    """Settings that fit no layer (a ``--sparsity``/``--bits`` regex matching none): a usage
    error, before training."""
    for method in chain:
        try:
            method.check(params)
        except ValueError as err:
            raise UsageError(str(err)) from None


def _per_layer(flag: str, entries: list[str] | None, convert, check) -> tuple | None:
    """``--sparsity``/``--bits`` entries: ``(bare value or None, {regex: value})``.

    A bare number applies to every layer; ``REGEX=VALUE`` entries (a leaf-path
    regex, e.g. ``'.*depthwise/kernel=0'``) come first, in the order given.
    ``check(value)`` returns an error message or None. None without entries.
    """
    import re

    if entries is None:
        return None
    bare, patterns = [], {}
    for entry in entries:
        pattern, sep, text = entry.rpartition("=")
        try:
            value = convert(text)
        except ValueError:
            raise UsageError(f"{flag}: {entry!r} is neither a number nor REGEX=NUMBER") from None
        problem = check(value)
        if problem:
            raise UsageError(f"{flag} {entry!r}: {problem}")
        if not sep:
            bare.append(value)
            continue
        try:
            re.compile(pattern)
        except re.error as err:
            raise UsageError(f"{flag}: bad regex {pattern!r} ({err})") from None
        patterns[pattern] = value
    if len(bare) > 1:
        raise UsageError(f"{flag}: one value for every layer at most, got {bare}")
    return (bare[0] if bare else None), patterns


def _with_layers(flag: str, given: tuple, preset, catch_all: str):
    """The preset with ``_per_layer``'s result applied: patterns first, then the bare
    value for every other layer, or else the preset's own entries."""
    bare, patterns = given
    if bare is not None:
        return {**patterns, catch_all: bare} if patterns else bare
    if preset is None:
        raise UsageError(f"{flag}: give a value for every other layer too (a bare number); "
                         "this model has no preset to keep")
    rest = preset if isinstance(preset, dict) else {catch_all: preset}
    return {**patterns, **{k: v for k, v in rest.items() if k not in patterns}}


_NOT_PRUNING = ("share", "ternary", "binary", "pattern", "cast")


def _compress_preset(args, choice):
    """The ``compress.Preset`` to run: the net's preset for ``--method`` (or its first one),
    else the method's defaults, with every flag given applied."""
    from zylax import compress, methods

    presets = choice.compression
    spec = args.method or next(iter(presets), "deep")
    try:
        names = methods.chain_names(spec)
    except ValueError as err:
        raise UsageError(f"--method {spec}: {err}") from None
    preset = compress.Preset(**presets[spec]) if spec in presets else compress.Preset(
        methods=spec)
    settings = {name: dict(preset.settings.get(name, {})) for name in names}
    prune, share = settings.get("prune"), settings.get("share")
    flags = {"--sparsity": prune, "--prune-cycles": prune, "--retrain-epochs": prune,
             "--gradual-epochs": prune, "--bits": share, "--index-bits": share}
    for flag, target in flags.items():
        if getattr(args, flag[2:].replace("-", "_")) is not None and target is None:
            raise UsageError(f"{flag} sets pruning or sharing, which --method {spec} does not run")
    if prune is not None:
        if args.sparsity is not None:
            value = _with_layers("--sparsity", args.sparsity, prune.get("sparsity", 0.5),
                                 ".*kernel")
            prune["sparsity"] = value if isinstance(value, dict) else value
        for flag, key in (("prune_cycles", "cycles"), ("retrain_epochs", "epochs")):
            if getattr(args, flag) is not None:
                prune[key] = getattr(args, flag)
        if args.gradual_epochs:
            prune.update(schedule="cubic", cycles=1, epochs=args.gradual_epochs)
    if share is not None:
        if args.bits is not None:
            share["bits"] = _with_layers("--bits", args.bits, share.get("bits"), ".*")
        if args.index_bits is not None:
            share["index_bits"] = args.index_bits
    for name in names:
        if name in _NOT_PRUNING and args.finetune_epochs is not None:
            settings[name]["epochs"] = args.finetune_epochs
        if name in ("ternary", "binary") and args.keep_float is not None:
            settings[name]["keep_float"] = tuple(k for k in args.keep_float if k != "none")
    if args.threshold is not None and "ternary" in settings:
        settings["ternary"]["t"] = args.threshold
    if "binary" in settings:
        if args.binary_scale is not None:
            settings["binary"]["scale"] = None if args.binary_scale == "none" else "channel"
        if args.stochastic:
            settings["binary"]["stochastic"] = True
    retrain = {**preset.retrain, **({"learning_rate": args.learning_rate}
                                    if args.learning_rate is not None else {})}
    fold = preset.fold_batch_norm if args.fold_batch_norm is None else args.fold_batch_norm
    unshared = preset.unshared_dtype if args.unshared_dtype is None else (
        None if args.unshared_dtype == "raw" else args.unshared_dtype)
    try:
        return compress.Preset(methods=spec, settings=settings, retrain=retrain,
                               fold_batch_norm=fold, unshared_dtype=unshared)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--method {spec}: {err}") from None


def cmd_compress(args) -> None:
    """Trains (or reloads, or takes ``--from``) the baseline, compresses it with ``--method``
    (Deep Compression by default), writes and re-scores the file, prints the Han-style table."""
    import jax

    from zylax import compress, report, train

    _positive("--baseline-epochs", args.baseline_epochs)
    _positive("--prune-cycles", args.prune_cycles)
    _positive("--retrain-epochs", args.retrain_epochs, zero_ok=True)
    _positive("--gradual-epochs", args.gradual_epochs, zero_ok=True)
    if args.gradual_epochs:
        for flag in ("prune_cycles", "retrain_epochs"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--gradual-epochs replaces the prune/retrain cycles; drop "
                                 f"--{flag.replace('_', '-')}")
    _positive("--finetune-epochs", args.finetune_epochs, zero_ok=True)
    _check_learning_rate(args.learning_rate)
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must lie in (0, 1), got {args.threshold}")
    args.bits = _per_layer("--bits", args.bits, int,
                           lambda b: None if 1 <= b <= 16 else "bits must lie in [1, 16]")
    args.sparsity = _per_layer("--sparsity", args.sparsity, float,
                               lambda s: None if 0 <= s < 1 else "sparsity must lie in [0, 1)")
    if args.index_bits is not None and args.index_bits != "auto":
        try:
            args.index_bits = int(args.index_bits)
        except ValueError:
            raise UsageError(f"--index-bits must be an integer or 'auto', got "
                             f"{args.index_bits!r}") from None
        _positive("--index-bits", args.index_bits, limit=16)
    _check_out_file(args.out)
    if args.report:
        _check_out_file(args.report, "--report")
    given = _adopt_baseline_file(args)
    choice = _check_common(args)
    preset = _compress_preset(args, choice)
    try:
        chain = preset.chain()
        retrain = compress.Retrain(**{"batch_size": choice.recipe.batch_size,
                                      "label_smoothing": choice.recipe.label_smoothing,
                                      "augment": choice.recipe.augment,
                                      "train_flag": args.train_flag, **preset.retrain})
    except (ValueError, TypeError) as err:
        raise UsageError(f"--method {preset.methods}: {err}") from None
    epochs = args.baseline_epochs or choice.recipe.epochs
    preprocess = (given.preprocess if given else
                  zdata.preprocessing(args.data, choice.recipe.pad_to))

    if given:
        _check_chain(chain, given.variables["params"])
        train_data = _prefix(zdata.load(args.data, "train", download=False),
                             args.max_examples)  # named by the file: never downloaded
        _, test_data = _test_split(given, None, args.max_test_examples)
        model, task, variables = given.model, given.task, given.variables
    else:
        train_data, test_data = load_data(args.data, args.max_examples, args.max_test_examples)
        _check_pad_to(choice.recipe, args, train_data[0])
        name = args.net or args.model.replace(":", ".")
        workdir = args.workdir or os.path.join("runs", f"{name}-{args.data}-seed{args.seed}")

        def checkpoint_dir(model, sample) -> str:
            shapes = jax.eval_shape(lambda: train.init_variables(model, sample, 0,
                                                                 args.train_flag))
            folder = os.path.abspath(os.path.join(
                workdir, f"baseline-{baseline_key(choice, args, epochs, shapes)}"))
            state = "resuming" if os.path.isdir(folder) else "training"
            print(f"baseline: {state} in {folder} (a run with the same settings and model "
                  "shapes reuses it; --workdir puts it elsewhere)")
            return folder
        model, task, baseline = _baseline(choice, args, train_data, preprocess, epochs,
                                          checkpoint_dir, before=lambda model, sample: (
                                              _check_chain(chain, train.init_variables(
                                                  model, sample, 0, args.train_flag)["params"])))
        variables = baseline.variables
    result = compress.run(model, variables, train_data, test_data, chain, out=args.out,
                          retrain=retrain, preprocess=preprocess, task=task,
                          fold_batch_norm=preset.fold_batch_norm,
                          metadata={**choice.metadata, "data": args.data},
                          reference=choice.reference, seed=args.seed,
                          progress=False if args.quiet else None,
                          on_epoch=epoch_logger(args.quiet))
    rep = result.report
    print(report.format_table(rep))
    written = [args.out]
    if args.report:
        written += report.write(rep, args.report)
        stem = os.path.splitext(args.report)[0]
        params = _leaf_names(result.snapshots["dense"])
        largest = max((r for r in rep["layers"] if r["name"] in params),
                      key=lambda r: r["weights"])["name"]
        figures = [(report.plot_weights(result.snapshots, largest), f"{stem}_weights.png"),
                   (report.plot_kept(rep), f"{stem}_kept.png")]
        for fig, path in figures:
            fig.savefig(path, dpi=100)
            written.append(path)
    print("wrote " + ", ".join(written))


def _leaf_names(tree) -> set[str]:
    from zylax.transforms import tree as ztree

    return set(ztree.named_leaves(tree))


def _check_learning_rate(value) -> None:
    if value is not None and not 0 < value <= 10:  # NaN fails too
        raise UsageError(f"--learning-rate must be > 0 and <= 10, got {value}")


def _adopt_baseline_file(args):
    """``--from FILE``: the trained file's model, data and task stand for --net/--data/--task.

    Returns the ``modelfile.ModelFile``, or None without ``--from``. A file made
    from a user's model needs ``--model``, as evaluate and export do.
    """
    from zylax import export

    path = args.baseline_file
    if path is None:
        return None
    if os.path.isdir(path):
        inside = os.path.join(path, "model.zyl")
        hint = f"; did you mean {inside}?" if os.path.isfile(inside) else ""
        raise UsageError(f"--from {path} is a folder, not a .zyl file{hint}")
    if not os.path.isfile(path):
        raise UsageError(f"--from {path}: no such file")
    given = [flag for flag, value in (("--net", args.net), ("--data", args.data),
                                      ("--baseline-epochs", args.baseline_epochs),
                                      ("--workdir", args.workdir)) if value is not None]
    if given:
        raise UsageError(f"--from {path} is the trained model; drop {', '.join(given)}")
    loaded = _model_file(path, args.model, "compress", None)
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


def _user_factory(spec: str):
    """The factory of ``--model package.module:factory``: imported because the user named it."""
    from zylax import registry

    try:
        return registry.import_factory(spec)
    except ValueError as err:
        raise UsageError(f"--model {spec}: {err}") from None


def _model_file(path: str, spec: str | None, command: str, max_decoded_bytes: int | None):
    """``path`` run by the model named with ``--model`` (``spec``), else by the registered net
    the file records; a file made from a user's model without ``--model`` is a usage error
    quoting its recorded spec. Nothing the file names is imported."""
    from zylax import modelfile

    factory = None if spec is None else _user_factory(spec)
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
    if spec is not None and recorded is not None and recorded != spec:
        print(f"zylax {command}: warning: {path} records the model {recorded!r}; using "
              f"--model {spec} as you named it", file=sys.stderr)
    return loaded


def _test_split(loaded, name: str | None, max_examples: int | None):
    """The test split the file is scored on (``modelfile.scoring_data``), cut to a prefix."""
    from zylax import modelfile

    try:
        name, split = modelfile.scoring_data(loaded, name)
    except modelfile.DatasetNeededError as err:
        raise UsageError(str(err)) from None
    except modelfile.ModelMismatchError as err:
        raise RuntimeError(str(err)) from None
    return name, _prefix(split, max_examples)


def cmd_evaluate(args) -> None:
    """Test accuracy (or AP50/mAP, mIoU) of a ``.zyl`` file, from the file alone."""
    _check_file_args(args)
    _positive("--max-examples (--max-test-examples)", args.max_examples)
    loaded = _model_file(args.file, args.model, "evaluate", args.max_decoded_bytes)
    task = inference_views(loaded.task, args.scales, args.flip)
    name, test_data = _test_split(loaded, args.data, args.max_examples)
    metrics = task.evaluate(loaded.model, loaded.variables, *test_data,
                            preprocess=loaded.preprocess)
    views = "" if task is loaded.task else (
        f" (scales {', '.join(f'{s:g}' for s in task.scales)}{', flipped' if task.flip else ''})")
    print(f"{args.file}: {loaded.label} on {name}: test {_scores(metrics, task)}{views}")


def inference_views(task, scales: list[float] | None, flip: bool):
    """A segmentation task that predicts from ``scales`` (and mirrored) inputs; ``task``
    itself without ``--scales``/``--flip``. Other tasks refuse them."""
    if scales is None and not flip:
        return task
    if task.name != "segmentation":
        raise UsageError(f"--scales and --flip are for segmentation models; this one is "
                         f"{task.name}")
    try:
        return dataclasses.replace(task, scales=tuple(scales or (1.0,)), flip=flip)
    except ValueError as err:
        raise UsageError(f"--scales: {err}") from None


def cmd_inspect(args) -> None:
    """The per-layer table of a ``.zyl`` file (decoded whole: a damaged file is refused)."""
    from zylax import archive, modelfile, report

    _check_file_args(args)
    _, header = archive.load_with_header(args.file, max_decoded_bytes=args.max_decoded_bytes)
    try:
        modelfile.check_metadata(header["metadata"])
    except archive.CorruptFileError as err:
        raise archive.CorruptFileError(f"{args.file}: {err}") from None
    rep = report.build(header, file_bytes=os.path.getsize(args.file), accuracies={})
    print(report.format_table(rep))


_MAX_EXPORT_INPUT = 1 << 24
"""Most input values (batch x one example) an exported model takes."""


def cmd_export(args) -> None:
    """Writes a LiteRT ``.tflite`` file of a ``.zyl`` file; prints how each kernel is stored."""
    from zylax import archive, export

    _check_file_args(args)
    _positive("--batch", args.batch, limit=4096)
    _check_out_file(args.out)
    limit = (args.max_decoded_bytes if args.max_decoded_bytes is not None
             else export.decoded_limit(os.path.getsize(args.file) if os.path.isfile(args.file)
                                       else 0))
    loaded = _model_file(args.file, args.model, "export", limit)
    sample = loaded.preprocess(np.random.default_rng(0).integers(
        0, 256, (1, *loaded.input_shape), np.uint8))
    if args.batch * sample.size > _MAX_EXPORT_INPUT:
        raise UsageError(f"--batch {args.batch} of {list(sample.shape[1:])} inputs is more than "
                         f"{_MAX_EXPORT_INPUT:,} input values; lower --batch")
    result = export.export(loaded.model, loaded.variables, sample, weights=args.weights,
                           batch=args.batch, methods=export.stored_methods(loaded.header))
    archive.write_atomic(args.out, result.tflite)
    print(export.format_layers(result.layers))
    print(f"wrote {args.out}: {len(result.tflite):,} bytes, weights {args.weights}; input float32 "
          f"{result.input_shape} = {loaded.preprocess}; max |LiteRT - JAX| "
          f"{result.max_output_diff:.2g} on a random image")


def _add_augment(parser: argparse.ArgumentParser, what: str) -> None:
    """``--augment/--no-augment``: overrides the recipe's augmentation of ``what``."""
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help=f"random flips (and, for images, shifts) of {what}; scenes are "
                             "mirrored with their boxes and masks (default: the net's recipe)")


def add_inference_views(parser: argparse.ArgumentParser) -> None:
    """``--scales S ...`` and ``--flip``, read by ``inference_views``."""
    parser.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                        help="segmentation: average the class probabilities of the inputs "
                             "resized by each S in [0.1, 8] (DeepLabV3's multi-scale "
                             "inference, e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true",
                        help="segmentation: also average over the left-right mirrored inputs")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", default=None, help="a registered net (default lenet300)")
    parser.add_argument("--model", default=None,
                        help="your own model: package.module:factory, a Module class or function "
                             "taking num_classes (or nothing)")
    parser.add_argument("--recipe", default=None, metavar="NET",
                        help="train with this registered net's recipe (optimizer, schedule, "
                             "epochs, batch size, padding, augmentation; RESULTS.md's measured "
                             "ones) instead of the net's own; the epochs, --batch-size and "
                             "--augment flags still override it; for --model the default is "
                             "AdamW 1e-3 for 10 epochs")
    parser.add_argument("--data", default=None,
                        help=f"one of {zdata.DATASETS} (default {zdata.DATASETS[0]})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="train on a prefix")
    parser.add_argument("--max-test-examples", type=int, default=None,
                        help="score on a prefix of the test split")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--task", default=None,
                        choices=("classification", "detection", "segmentation"),
                        help="what the model does (default: the net's; for --model, detection "
                             "when it has anchors(), else classification)")


def _check_file_args(args) -> None:
    _positive("--max-decoded-bytes", args.max_decoded_bytes, limit=1 << 50)


def _add_file(parser: argparse.ArgumentParser, *, runs_model: bool = True) -> None:
    parser.add_argument("file")
    parser.add_argument("--max-decoded-bytes", type=int, default=None,
                        help="refuse files that decode to more (default: see zylax.archive)")
    if runs_model:
        parser.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY",
                            help="the model the file was made from (your own code: a file "
                                 "never names code that zylax runs); needed for files made "
                                 "from a model that is not a registered net")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zylax`` command."""
    parser = _Parser(prog="zylax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a baseline net")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="peak learning rate of the recipe's warmup and cosine decay (default: "
                        "the recipe's), e.g. lower to fine-tune an --init-from model")
    p.add_argument("--out", required=True, help="output folder (checkpoints go inside)")
    p.add_argument("--init-from", default=None, metavar="FILE",
                   help="start from the layers of this .zyl file that match the net's by "
                        "path and shape (e.g. DeepLabV3 from a trained SSDLite's MobileNet V2 "
                        "trunk); the other layers start fresh")
    _add_augment(p, "the training data")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="compress a trained model (Deep Compression, TTQ, BNN, "
                                        "SEP-Net patterns, or a chain) into a verified file")
    _add_common(p)
    p.add_argument("--method", default=None, metavar="SPEC",
                   help="the chain of methods: deep (prune+share, the default), ttq, bnn, "
                        "pattern, any method (prune, share, ternary, binary, pattern, cast) or "
                        "a chain of them joined by + (retrained stage after stage: prune+ttq) "
                        "or & (one stage, disjoint layers: pattern&share); a net's preset for "
                        "that chain applies when it has one")
    p.add_argument("--out", default="model.zyl",
                   help="compressed model file (default: model.zyl; its folder is created)")
    p.add_argument("--report", default=None, help="report JSON (Markdown and PNGs beside it)")
    _add_augment(p, "the training data (the baseline's, and every stage's retraining)")
    p.add_argument("--from", dest="baseline_file", default=None, metavar="FILE",
                   help="compress this trained .zyl file (zylax train's model.zyl) instead of "
                        "training a baseline; the data and task come from the file, the model "
                        "too when it is a registered net (else name it with --model)")
    p.add_argument("--workdir", default=None, help="where the baseline checkpoint is kept for "
                   "reuse (default runs/NAME-DATA-seedSEED)")
    p.add_argument("--baseline-epochs", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="retraining peak rate (Adam, cosine over each stage; default: the "
                        "net's preset, else chosen by a short sweep on held-out training data)")
    p.add_argument("--train-flag", default=None, metavar="NAME",
                   help="your model's training argument when it is none of "
                        f"{layers.KNOWN_FLAGS} (prefix ! when it is True in inference)")
    p.add_argument("--prune-cycles", type=int, default=None, help="prune: Han's prune/retrain "
                   "cycles")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="prune: epochs of retraining per cycle")
    p.add_argument("--gradual-epochs", type=int, default=None,
                   help="prune gradually in one run of this many epochs (Zhu & Gupta) instead "
                        "of --prune-cycles x --retrain-epochs; 0 keeps the cycles")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of retraining of every stage but pruning (share, ternary, "
                        "binary, pattern)")
    p.add_argument("--sparsity", nargs="+", default=None, metavar="S|REGEX=S",
                   help="prune: final sparsity of every kernel, and/or of the kernels whose "
                        "whole leaf path matches REGEX (first match wins), e.g. --sparsity 0.5 "
                        "'.*depthwise/kernel=0'; patterns alone go before the net's preset "
                        "(default: the preset, else 0.5)")
    p.add_argument("--bits", nargs="+", default=None, metavar="B|REGEX=B",
                   help="share: weight bits of every layer, and/or of the layers matching "
                        "REGEX, e.g. --bits 3 '.*depthwise/kernel=5' (default: the net's "
                        "preset, else Han's 8 conv / 5 dense)")
    p.add_argument("--index-bits", default=None,
                   help="share: gap bits for every layer, or 'auto' (the smallest file, default)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="ternary: TTQ's threshold factor t (default 0.05)")
    p.add_argument("--binary-scale", default=None, choices=("channel", "none"),
                   help="binary: a learned scale per output channel (default) or plain +-1")
    p.add_argument("--stochastic", action="store_true",
                   help="binary: stochastic signs while training (BNN eq. 2)")
    p.add_argument("--keep-float", nargs="+", default=None, choices=("first", "last", "none"),
                   help="ternary, binary: the layers (in execution order) left float "
                        "(default: first last)")
    p.add_argument("--unshared-dtype", default=None, choices=("raw", "float16", "bfloat16"),
                   help="how to store what the methods leave float (biases, BatchNorm vectors "
                        "and statistics, float layers): as they are, or at 2 bytes a value "
                        "(default: the net's preset, raw for most nets)")
    p.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="fold BatchNorm statistics into scale and bias before storing (half "
                        "the BatchNorm bytes; the file is then for inference only; default: "
                        "the net's preset, off for most nets)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("evaluate", help="test accuracy (AP50/mAP, mIoU) of a .zyl file")
    _add_file(p)
    p.add_argument("--data", default=None, help="dataset (default: the one in the file)")
    p.add_argument("--max-examples", "--max-test-examples", dest="max_examples", type=int,
                   default=None, help="score the first N test examples only (the second "
                   "spelling is train's and compress's)")
    add_inference_views(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="per-layer table of a .zyl file")
    _add_file(p, runs_model=False)
    p.set_defaults(func=cmd_inspect)

    from zylax import export
    p = sub.add_parser("export", help="a LiteRT .tflite file of a .zyl file (needs zylax[litert])")
    _add_file(p)
    p.add_argument("--out", required=True, help="the .tflite file to write")
    p.add_argument("--weights", default="auto", choices=export.WEIGHTS,
                   help="how kernels are stored (default auto: as each codec declares: exact "
                        "2-bit for binary, pattern and ternary, int8 for shared, float32 for "
                        "raw)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the model input")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zylax`` console script; exits 2 on usage errors, 1 on failures.

    Run as the ``zylax`` console script (no ``argv``), it first restarts itself
    with glibc's huge-page malloc (``zylax.hugepages``: 1.2x faster CPU
    training steps here; ``ZYLAX_HUGEPAGES=0`` turns it off).
    """
    if argv is None and os.path.basename(sys.argv[0]) == "zylax":
        from zylax import hugepages

        hugepages.restart_tuned()
    from zylax import archive

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:  # `zylax inspect FILE | head`
        sys.stderr.close()
        os._exit(0)
    except UsageError as err:
        parser.exit(2, f"zylax {args.command}: error: {err}\n")
    except Exception as err:  # noqa: BLE001 - every failure is one line (ZYLAX_DEBUG=1: traceback)
        if os.environ.get("ZYLAX_DEBUG") == "1":
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and err.filename and err.strerror:
            message = f"{err.filename}: {err.strerror}"
        elif not isinstance(err, (archive.CorruptFileError, zdata.DatasetNotFoundError,
                                  RuntimeError, ValueError, OSError)):
            message = f"{type(err).__name__}: {message} (ZYLAX_DEBUG=1 shows the traceback)"
        parser.exit(1, f"zylax {args.command}: {message[:1000]}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
