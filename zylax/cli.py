"""The ``zylax`` command: train, compress, sensitivity, evaluate, inspect, export.

Argument parsing, validation and printing over the library: ``zylax.baseline``
(the model named, its cached baseline), ``zylax.presets`` (a preset with the
flags applied), ``zylax.compress``, ``zylax.modelfile`` and ``zylax.export``.
Every argument is checked before any data is loaded or any training runs.
Errors are one line on stderr: exit code 2 for a bad argument, 1 for a
failure at run time (``ZYLAX_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import re
import sys
import tempfile

import numpy as np

from zylax import (archive, baseline, compress, export, hugepages, modelfile, presets, registry,
                   report, sensitivity, tasks, train)
from zylax import data as zdata
from zylax.nets import layers


class UsageError(Exception):
    """A bad command-line argument (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr, as every other failure is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def _usage(prefix: str = "", kind: type[Exception] = ValueError):
    """A library error of ``kind`` raised inside becomes a ``UsageError`` (``prefix`` first)."""
    try:
        yield
    except kind as err:
        raise UsageError(f"{prefix}{err}") from None


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


def _check_not_input(out: str, source: str | None, flag: str = "--out") -> None:
    """An output path that is the input file would replace it: a usage error."""
    if source is not None and os.path.exists(out) and os.path.exists(source) and \
            os.path.samefile(out, source):
        raise UsageError(f"{flag} {out} is the input file; give another path")


def _check_learning_rate(value) -> None:
    if value is not None and not 0 < value <= 10:  # NaN fails too
        raise UsageError(f"--learning-rate must be > 0 and <= 10, got {value}")


def _did_you_mean(name: str) -> str:
    """``" (did you mean 'x'?)"`` for the registered net closest to ``name``, else ``""``."""
    close = difflib.get_close_matches(name.lower(), sorted(registry.NETS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_common(args):
    """The model, data and settings shared by train and compress: a ``baseline.ModelChoice``."""
    args.data = args.data or zdata.names()[0]
    if args.data not in zdata.names():
        raise UsageError(f"unknown dataset {args.data!r}; choose one of {zdata.names()}")
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
        raise UsageError(f"{choice.task} needs {zdata.LABEL_KINDS[needed]}: train on --data "
                         f"{wanted[0] if wanted else '(none registered)'}, not {args.data}")
    if labels == "scenes" and choice.task is None and args.net:
        raise UsageError(f"--data {args.data} has boxes and masks, not class labels; use a "
                         "detection or segmentation net")
    with _usage():
        tasks.check_model(built, choice.task)
    return choice


def _load_data(args):
    """Train and test splits of ``--data``, cut to ``--max-examples``/``--max-test-examples``."""
    train_data, test_data = zdata.load(args.data, "train"), zdata.load(args.data, "test")
    with _usage("--max-examples "):
        train_data = zdata.prefix(train_data, args.max_examples)
    with _usage("--max-test-examples "):
        test_data = zdata.prefix(test_data, args.max_test_examples)
    return train_data, test_data


def _scores(metrics: dict, task) -> str:
    """``accuracy 0.9012`` or ``AP50 0.8123, mAP 0.5432`` (the task's metric first)."""
    names = [task.metric] + [k for k in metrics if k != task.metric and k != "loss"]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in names)


def _check_pad_to(recipe, args, images: np.ndarray) -> None:
    """A recipe that pads to less than the images (e.g. a lent ``--recipe``): a usage error."""
    if recipe.pad_to is not None and recipe.pad_to < max(images.shape[1:3]):
        source = f"--recipe {args.recipe}" if args.recipe else "the recipe"
        raise UsageError(f"{source} pads images to {recipe.pad_to}x{recipe.pad_to}, but the "
                         f"{args.data} images are {images.shape[1]}x{images.shape[2]}")


def cmd_train(args) -> None:
    """Trains a baseline; prints its test scores, checkpoint folder and ``model.zyl`` file."""
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
    train_data, test_data = _load_data(args)
    _check_pad_to(choice.recipe, args, train_data[0])
    dataset = zdata.get(args.data)
    preprocess = dataset.preprocessing(choice.recipe.pad_to)
    print(f"recipe{f' of {args.recipe}' if args.recipe else ''}: "
          f"{dataclasses.replace(choice.recipe, epochs=epochs)}")
    if resumed is not None:
        print(f"resuming from step {resumed} of the checkpoint in {checkpoint_dir} (another "
              "--out starts afresh)")
    before = None
    if donor is not None:
        def before(model, sample):
            variables, summary = baseline.warm_start(model, sample, donor, args.seed)
            print(f"warm start from {args.init_from}: {summary}")
            return {"variables": variables}
    elif args.init_from is not None:
        print(f"--init-from {args.init_from} is not used: the run resumes its checkpoint")
    with _usage(kind=baseline.LabelKindError):
        model, task, result = baseline.train_baseline(
            choice, train_data, preprocess, epochs=epochs, seed=args.seed,
            checkpoint_dir=checkpoint_dir, dataset=dataset, before=before, quiet=args.quiet,
            max_steps=args.max_steps)
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
    with _usage():
        for method in chain:
            method.check(params)


def _compress_settings(args) -> None:
    """Checks compress's own numbers; parses ``--bits``/``--sparsity`` and ``--index-bits``."""
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
    with _usage():
        args.bits = presets.per_layer(args.bits, int, lambda b: None if 1 <= b <= 16
                                      else "bits must lie in [1, 16]", "--bits")
        args.sparsity = presets.per_layer(args.sparsity, float, lambda s: None if 0 <= s < 1
                                          else "sparsity must lie in [0, 1)", "--sparsity")
    if args.index_bits is not None and args.index_bits != "auto":
        try:
            args.index_bits = int(args.index_bits)
        except ValueError:
            raise UsageError(f"--index-bits must be an integer or 'auto', got "
                             f"{args.index_bits!r}") from None
        _positive("--index-bits", args.index_bits, limit=16)
    _check_out_file(args.out)
    _check_not_input(args.out, args.baseline_file)
    if args.report:
        _check_out_file(args.report, "--report")
        _check_not_input(args.report, args.baseline_file, "--report")


def _compress_preset(args, choice):
    """The net's preset for ``--method`` with every flag applied (``presets.override``)."""
    with _usage(f"--method {args.method or 'deep'}: "):
        return presets.override(
            choice.compression, args.method, sparsity=args.sparsity, cycles=args.prune_cycles,
            retrain_epochs=args.retrain_epochs, gradual_epochs=args.gradual_epochs,
            bits=args.bits, index_bits=args.index_bits, finetune_epochs=args.finetune_epochs,
            keep_float=args.keep_float, threshold=args.threshold,
            binary_scale=args.binary_scale, stochastic=args.stochastic,
            learning_rate=args.learning_rate, fold_batch_norm=args.fold_batch_norm,
            unshared_dtype=args.unshared_dtype)


def cmd_compress(args) -> None:
    """Trains (or reloads, or takes ``--from``) the baseline, compresses it with ``--method``
    (Deep Compression by default), writes and re-scores the file, prints the Han-style table."""
    _compress_settings(args)
    given = _adopt_baseline_file(args)
    choice = _check_common(args)
    preset = _compress_preset(args, choice)
    with _usage(f"--method {preset.methods}: "):
        chain = preset.chain()
        retrain = compress.Retrain(**{"batch_size": choice.recipe.batch_size,
                                      "label_smoothing": choice.recipe.label_smoothing,
                                      "augment": choice.recipe.augment,
                                      "train_flag": args.train_flag, **preset.retrain})
    model, task, variables, train_data, test_data, preprocess = _trained(
        args, given, choice, lambda params: _check_chain(chain, params))
    result = compress.run(model, variables, train_data, test_data, chain, out=args.out,
                          retrain=retrain, preprocess=preprocess, task=task,
                          fold_batch_norm=preset.fold_batch_norm,
                          metadata={**choice.metadata, "data": args.data},
                          reference=choice.reference, seed=args.seed,
                          progress=False if args.quiet else None,
                          on_epoch=train.epoch_logger(args.quiet))
    print(report.format_table(result.report))
    written = [args.out]
    if args.report:
        written += report.write_with_figures(result, args.report)
    print("wrote " + ", ".join(written))


def _trained(args, given, choice, check=None):
    """``(model, task, variables, train_data, test_data, preprocess)`` of the ``--from`` file
    (``given``), else of the baseline trained (or reused) for ``choice``; ``check(params)``
    runs on the model's params before any training."""
    dataset = zdata.get(args.data)
    if given:
        if check is not None:
            check(given.variables["params"])
        _, test_data = _test_split(given, None, args.max_test_examples)  # checks it first
        train_data = dataset.load("train", download=False)  # named by the file: no download
        with _usage("--max-examples "):
            train_data = zdata.prefix(train_data, args.max_examples)
        return (given.model, given.task, given.variables, train_data, test_data,
                given.preprocess)
    epochs = args.baseline_epochs or choice.recipe.epochs
    preprocess = dataset.preprocessing(choice.recipe.pad_to)
    train_data, test_data = _load_data(args)
    _check_pad_to(choice.recipe, args, train_data[0])
    name = args.net or args.model.replace(":", ".")
    workdir = args.workdir or os.path.join("runs", f"{name}-{args.data}-seed{args.seed}")
    folder = baseline.baseline_dir(workdir, choice, data=args.data, seed=args.seed,
                                   epochs=epochs, max_examples=args.max_examples,
                                   train_flag=args.train_flag)

    def before(model, sample):
        if check is not None:
            check(train.init_variables(model, sample, 0, args.train_flag)["params"])
    with _usage(kind=baseline.LabelKindError):
        model, task, trained = baseline.train_baseline(
            choice, train_data, preprocess, epochs=epochs, seed=args.seed,
            checkpoint_dir=folder, dataset=dataset, quiet=args.quiet, before=before)
    return model, task, trained.variables, train_data, test_data, preprocess


def cmd_sensitivity(args) -> None:
    """Per-layer pruning and sharing curves of a trained model (Han's Figure 6), scored on
    held-out training data; prints the table, writes JSON, Markdown and the plot."""
    _positive("--baseline-epochs", args.baseline_epochs)
    stem, suffix = os.path.splitext(args.out)
    if suffix in (".md", ".png"):
        raise UsageError(f"--out {args.out}: the JSON path (the .md and .png go beside it)")
    for path in (args.out, stem + ".md", stem + ".png"):
        _check_out_file(path)
        _check_not_input(path, args.baseline_file)
    try:
        re.compile(args.include)
    except (re.error, OverflowError, RecursionError) as err:
        raise UsageError(f"--include: bad regex {args.include!r} ({err})") from None
    given = _adopt_baseline_file(args)
    choice = _check_common(args)
    model, task, variables, train_data, _, preprocess = _trained(args, given, choice)
    with _usage("--include: "):
        found = sensitivity.sensitivity(model, variables, train_data, preprocess=preprocess,
                                        task=task, include=args.include,
                                        train_flag=args.train_flag)
    table = found.format_table()
    print(table)
    found.write(args.out)
    archive.write_atomic(stem + ".md", table.encode())
    found.plot().savefig(stem + ".png", dpi=100)
    print(f"wrote {args.out}, {stem}.md, {stem}.png")


def _adopt_baseline_file(args):
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
    loaded = _model_file(path, args.model, args.command, None)
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


def _model_file(path: str, spec: str | None, command: str, max_decoded_bytes: int | None):
    """``path`` run by the model named with ``--model`` (``spec``), else by the registered net
    the file records; a file made from a user's model without ``--model`` is a usage error
    quoting its recorded spec. Nothing the file names is imported."""
    factory = None
    if spec is not None:
        with _usage(f"--model {spec}: "):
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


def _test_split(loaded, name: str | None, max_examples: int | None):
    """The test split the file is scored on (``modelfile.scoring_data``), cut to a prefix."""
    try:
        name, split = modelfile.scoring_data(loaded, name)
    except modelfile.DatasetNeededError as err:
        raise UsageError(str(err)) from None
    except modelfile.ModelMismatchError as err:
        raise RuntimeError(str(err)) from None
    with _usage("--max-examples "):
        return name, zdata.prefix(split, max_examples)


def cmd_evaluate(args) -> None:
    """Test accuracy (or AP50/mAP, mIoU) of a ``.zyl`` file, from the file alone."""
    _check_file_args(args)
    _positive("--max-examples (--max-test-examples)", args.max_examples)
    loaded = _model_file(args.file, args.model, "evaluate", args.max_decoded_bytes)
    with _usage("--scales: "):
        task = tasks.with_views(loaded.task, args.scales, args.flip)
    name, test_data = _test_split(loaded, args.data, args.max_examples)
    metrics = task.evaluate(loaded.model, loaded.variables, *test_data,
                            preprocess=loaded.preprocess)
    views = "" if task is loaded.task else (
        f" (scales {', '.join(f'{s:g}' for s in task.scales)}{', flipped' if task.flip else ''})")
    print(f"{args.file}: {args.model or loaded.label} on {name}: test "
          f"{_scores(metrics, task)}{views}")


def cmd_inspect(args) -> None:
    """The per-layer table of a ``.zyl`` file (decoded whole: a damaged file is refused)."""
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
    _check_file_args(args)
    _positive("--batch", args.batch, limit=4096)
    _check_out_file(args.out)
    _check_not_input(args.out, args.file)
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


def _add_inference_views(parser: argparse.ArgumentParser) -> None:
    """``--scales S ...`` and ``--flip`` (``tasks.with_views``)."""
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
                             "ones) instead of the net's own; --epochs (train), "
                             "--baseline-epochs (compress), --batch-size and --augment still "
                             "override it; for --model the default is AdamW 1e-3 for 10 "
                             "epochs")
    parser.add_argument("--data", default=None,
                        help=f"one of {zdata.names()} (default {zdata.names()[0]})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="train on a prefix")
    parser.add_argument("--max-test-examples", type=int, default=None,
                        help="score on a prefix of the test split")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--task", default=None,
                        choices=tuple(tasks.TASKS),
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
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the baseline trained before compressing (default: the "
                        "recipe's)")
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

    p = sub.add_parser("sensitivity", help="per-layer accuracy against pruning and against "
                                           "shared-weight bits (Han's Figure 6)")
    _add_common(p)
    p.add_argument("--from", dest="baseline_file", default=None, metavar="FILE",
                   help="the trained .zyl file to analyse (else the baseline of --net/--model "
                        "is trained, or reused from --workdir)")
    p.add_argument("--workdir", default=None, help="where the baseline checkpoint is kept")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the baseline (default: the recipe's)")
    p.add_argument("--train-flag", default=None, metavar="NAME",
                   help="your model's training argument when it is none of "
                        f"{layers.KNOWN_FLAGS} (prefix ! when it is True in inference)")
    p.add_argument("--include", default=".*kernel", metavar="REGEX",
                   help="the leaves analysed (a regex on the leaf path; default every kernel)")
    p.add_argument("--out", default="sensitivity.json",
                   help="the JSON written (Markdown and PNG beside it)")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("evaluate", help="test accuracy (AP50/mAP, mIoU) of a .zyl file")
    _add_file(p)
    p.add_argument("--data", default=None, help="dataset (default: the one in the file)")
    p.add_argument("--max-examples", "--max-test-examples", dest="max_examples", type=int,
                   default=None, help="score the first N test examples only (the second "
                   "spelling is train's and compress's)")
    _add_inference_views(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="per-layer table of a .zyl file")
    _add_file(p, runs_model=False)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export", help="a LiteRT .tflite file of a .zyl file (needs zylax[litert])")
    _add_file(p)
    p.add_argument("--out", required=True, help="the .tflite file to write")
    p.add_argument("--weights", default="auto", choices=export.WEIGHTS,
                   help="how kernels are stored (default auto: as each codec declares: exact "
                        "2-bit for binary, pattern and ternary, int8 for shared, float32 for "
                        "raw)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the model input")
    p.set_defaults(func=cmd_export)
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zylax`` console script; exits 2 on usage errors, 1 on failures.

    Run as the ``zylax`` console script (no ``argv``), it first restarts itself
    with glibc's huge-page malloc (``zylax.hugepages``; BENCHMARKS.md, section
    10; ``ZYLAX_HUGEPAGES=0`` turns it off).
    """
    if argv is None and os.path.basename(sys.argv[0]) == "zylax":
        hugepages.restart_tuned()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own help lists what it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
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
