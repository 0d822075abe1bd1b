"""The ``zylax`` subcommands: each checks its arguments, calls the library and prints."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from zylax import archive, baseline, budget, compress, export, modelfile, presets, report
from zylax import sensitivity, tasks, train
from zylax import data as zdata
from zylax.cli.checks import (UsageError, check_chain, check_file_args, check_learning_rate,
                               check_not_input, check_out_file, check_pad_to, compress_settings,
                               positive, usage)
from zylax.cli.sources import (adopt_baseline_file, check_common, load_data, model_file,
                                scoring_split, trained_model)


def scores(metrics: dict, task) -> str:
    """``accuracy 0.9012`` or ``AP50 0.8123, mAP 0.5432`` (the task's metric first)."""
    names = [task.metric] + [k for k in metrics if k != task.metric and k != "loss"]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in names)


def cmd_train(args) -> None:
    """Trains a baseline; prints its test scores, checkpoint folder and ``model.zyl`` file."""
    choice = check_common(args)
    positive("--epochs", args.epochs)
    positive("--max-steps", args.max_steps)
    check_learning_rate(args.learning_rate)
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
    check_pad_to(choice.recipe, args)
    train_data, test_data = load_data(args)
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
    with usage(kind=baseline.LabelKindError):
        model, task, result = baseline.train_baseline(
            choice, train_data, preprocess, epochs=epochs, seed=args.seed,
            checkpoint_dir=checkpoint_dir, dataset=dataset, before=before, quiet=args.quiet,
            max_steps=args.max_steps)
    metrics = task.evaluate(model, result.variables, *test_data, preprocess=preprocess)
    print(f"{args.net or args.model} on {args.data}: test {scores(metrics, task)} "
          f"after {int(result.state.step)} steps")
    path = os.path.join(args.out, "model.zyl")
    archive.save(path, result.variables, metadata=tasks.file_metadata(
        task, preprocess, *train_data, {**choice.metadata, "data": args.data}))
    print(f"checkpoint: {checkpoint_dir}")
    print(f"model file: {path} (float weights; zylax evaluate, export and compress --from "
          "take it)")


def compress_preset(args, choice):
    """The net's preset for ``--method`` with every flag applied (``presets.override``)."""
    with usage(f"--method {args.method or 'deep'}: "):
        return presets.override(
            choice.compression, args.method, sparsity=args.sparsity, cycles=args.prune_cycles,
            retrain_epochs=args.retrain_epochs, gradual_epochs=args.gradual_epochs,
            bits=args.bits, index_bits=args.index_bits, finetune_epochs=args.finetune_epochs,
            keep_float=args.keep_float, threshold=args.threshold,
            binary_scale=args.binary_scale, stochastic=args.stochastic,
            learning_rate=args.learning_rate, fold_batch_norm=args.fold_batch_norm,
            unshared_dtype=args.unshared_dtype, kl_weight=args.kl_weight,
            stage_epochs=args.stage_epochs)


def cmd_compress(args) -> None:
    """Trains (or reloads, or takes ``--from``) the baseline, compresses it with ``--method``
    (Deep Compression by default), writes and re-scores the file, prints the Han-style table."""
    compress_settings(args)
    given = adopt_baseline_file(args)
    choice = check_common(args)
    if args.budget is not None or args.max_drop is not None:
        return compress_to_budget(args, given, choice)
    preset = compress_preset(args, choice)
    with usage(f"--method {preset.methods}: "):
        chain = preset.chain()
        retrain = compress.Retrain(**{"batch_size": choice.recipe.batch_size,
                                      "label_smoothing": choice.recipe.label_smoothing,
                                      "augment": choice.recipe.augment,
                                      "train_flag": args.train_flag, **preset.retrain})
    model, task, variables, train_data, test_data, preprocess = trained_model(
        args, given, choice,
        lambda model, variables, sample: check_chain(chain, model, variables, sample,
                                                     args.train_flag))
    result = compress.run(model, variables, train_data, test_data, chain, out=args.out,
                          retrain=retrain, preprocess=preprocess, task=task,
                          fold_batch_norm=preset.fold_batch_norm,
                          metadata={**choice.metadata, "data": args.data},
                          reference=choice.reference, seed=args.seed,
                          progress=False if args.quiet else None,
                          on_epoch=train.epoch_logger(args.quiet))
    print(report.format_table(result.report))
    finish(args, result, test_data)


def finish(args, result, test_data) -> None:
    """The ``--tflite`` export (``ship``), then the ``--report`` files, written even when the
    export fails; prints what was written."""
    written = [args.out]
    try:
        written += ship(args, result, test_data)
    finally:
        if args.report:
            written += report.write_with_figures(result, args.report)
        print("wrote " + ", ".join(written))


def ship(args, result, test_data) -> list[str]:
    """``--tflite``: the written ``.zyl`` read back, exported (weights auto, batch 1) and
    scored in the LiteRT interpreter on ``test_data``; prints its download bytes next to the
    file's, and adds them to ``result.report["export"]``. Returns the paths written."""
    if args.tflite is None:
        return []
    loaded = model_file(args.out, args.model, "compress", None)
    images, labels = test_data
    exported, scored = export.ship(loaded.model, loaded.variables, images, labels,
                                   task=loaded.task, preprocess=loaded.preprocess,
                                   out=args.tflite, methods=export.stored_methods(loaded.header))
    metric, zyl = loaded.task.metric, result.report["file_bytes"]
    result.report["export"] = {
        "tflite": args.tflite, "weights": "auto", "tflite_bytes": len(exported.tflite),
        "download_bytes": exported.download_bytes, "metric": metric, "litert": scored,
        "test_examples": len(images), "max_output_diff": exported.max_output_diff,
        "layers": {path: dataclasses.asdict(row) for path, row in exported.layers.items()}}
    print(export.format_layers(exported.layers))
    if note := export.sparse_note(exported.layers):
        print(note)
    print(f"LiteRT: {len(exported.tflite):,} B .tflite, download (gzip -9) "
          f"{exported.download_bytes:,} B = {exported.download_bytes / zyl:.2f}x the "
          f"{zyl:,}-byte .zyl; test {metric} {scored[metric]:.4f} in the interpreter on "
          f"{len(images):,} images ({result.report['compressed_accuracy']:.4f} from the file "
          "in JAX)")
    if args.budget is not None and exported.download_bytes > args.budget:
        print(f"the download is over --budget {args.budget:,} B, which caps the .zyl file: for "
              f"a download under it, run again with about --budget "
              f"{args.budget * zyl // exported.download_bytes:,}")
    return [args.tflite]


def compress_to_budget(args, given, choice) -> None:
    """``--budget``/``--max-drop``: each layer's pruning and sharing chosen from the model's
    sensitivity curves (``zylax.budget``), then run, written and re-scored like any chain."""
    retrain = compress.Retrain(
        batch_size=choice.recipe.batch_size, label_smoothing=choice.recipe.label_smoothing,
        augment=choice.recipe.augment, train_flag=args.train_flag,
        **({} if args.learning_rate is None else {"learning_rate": args.learning_rate}))
    model, task, variables, train_data, test_data, preprocess = trained_model(args, given, choice)
    if not args.quiet:
        print(f"measuring each kernel's sensitivity on the last "
              f"{len(sensitivity.held_out(train_data)[0]):,} training images and pricing its "
              "options (a minute or more), then retraining the plan", flush=True)
    found, result = budget.run(
        model, variables, train_data, test_data, out=args.out, budget=args.budget,
        max_drop=args.max_drop, epochs=1 if args.finetune_epochs is None else
        args.finetune_epochs, preprocess=preprocess, task=task, retrain=retrain,
        metadata={**choice.metadata, "data": args.data}, fold_batch_norm=bool(
            args.fold_batch_norm), reference=choice.reference, seed=args.seed,
        progress=False if args.quiet else None, on_epoch=train.epoch_logger(args.quiet),
        index_bits=args.index_bits or "ans", forms=tuple(args.forms or ()))
    print(found.format_table())
    print(report.format_table(result.report))
    row = result.report["budget"]
    asked = (f"budget {args.budget:,} B" if args.budget is not None
             else f"at most {args.max_drop:g} points lost")
    print(f"{asked}: predicted {row['predicted_bytes']:,} B, written {row['written_bytes']:,} B "
          f"({row['written_bytes'] / row['predicted_bytes'] - 1:+.1%}); {task.metric} drop "
          f"predicted {row['predicted_drop']:.2f} points before retraining, measured "
          f"{row['measured_drop']:.2f} from the file"
          f"{' (negative: the file scores higher)' if row['measured_drop'] < 0 else ''}")
    finish(args, result, test_data)


def cmd_sensitivity(args) -> None:
    """Per-layer pruning and sharing curves of a trained model (Han's Figure 6), scored on
    held-out training data; prints the table, writes JSON, Markdown and the plot."""
    positive("--baseline-epochs", args.baseline_epochs)
    stem, suffix = os.path.splitext(args.out)
    if suffix in (".md", ".png"):
        raise UsageError(f"--out {args.out}: the JSON path (the .md and .png go beside it)")
    for path in (args.out, stem + ".md", stem + ".png"):
        check_out_file(path)
        check_not_input(path, args.baseline_file)
    try:
        re.compile(args.include)
    except (re.error, OverflowError, RecursionError) as err:
        raise UsageError(f"--include: bad regex {args.include!r} ({err})") from None
    given = adopt_baseline_file(args)
    choice = check_common(args)
    model, task, variables, train_data, _, preprocess = trained_model(args, given, choice)
    with usage("--include: "):
        found = sensitivity.sensitivity(model, variables, train_data, preprocess=preprocess,
                                        task=task, include=args.include,
                                        train_flag=args.train_flag)
    table = found.format_table()
    print(table)
    found.write(args.out)
    archive.write_atomic(stem + ".md", table.encode())
    found.plot().savefig(stem + ".png", dpi=100)
    print(f"wrote {args.out}, {stem}.md, {stem}.png")


def cmd_evaluate(args) -> None:
    """Test accuracy (or AP50/mAP, mIoU) of a ``.zyl`` file, from the file alone."""
    check_file_args(args)
    positive("--max-examples (--max-test-examples)", args.max_examples)
    loaded = model_file(args.file, args.model, "evaluate", args.max_decoded_bytes)
    with usage("--scales: "):
        task = tasks.with_views(loaded.task, args.scales, args.flip)
    name, test_data = scoring_split(loaded, args.data, args.max_examples)
    metrics = task.evaluate(loaded.model, loaded.variables, *test_data,
                            preprocess=loaded.preprocess)
    views = "" if task is loaded.task else (
        f" (scales {', '.join(f'{s:g}' for s in task.scales)}{', flipped' if task.flip else ''})")
    print(f"{args.file}: {args.model or loaded.label} on {name}: test "
          f"{scores(metrics, task)}{views}")


def cmd_inspect(args) -> None:
    """The per-layer table of a ``.zyl`` file (decoded whole: a damaged file is refused)."""
    check_file_args(args)
    _, header = archive.load_with_header(args.file, max_decoded_bytes=args.max_decoded_bytes)
    try:
        modelfile.check_metadata(header["metadata"])
    except archive.CorruptFileError as err:
        raise archive.CorruptFileError(f"{args.file}: {err}") from None
    rep = report.build(header, file_bytes=os.path.getsize(args.file), accuracies={})
    print(report.format_table(rep))


MAX_EXPORT_INPUT = 1 << 24
"""Most input values (batch x one example) an exported model takes."""


def cmd_export(args) -> None:
    """Writes a LiteRT ``.tflite`` file of a ``.zyl`` file; prints how each kernel is stored."""
    check_file_args(args)
    positive("--batch", args.batch, limit=4096)
    check_out_file(args.out)
    check_not_input(args.out, args.file)
    if args.max_decoded_bytes is None:  # before decoding: the header declares the arrays
        export.check_decoded_size(args.file, archive.read_header(args.file),
                                  os.path.getsize(args.file))
    loaded = model_file(args.file, args.model, "export", args.max_decoded_bytes)
    sample = loaded.preprocess(np.random.default_rng(0).integers(
        0, 256, (1, *loaded.input_shape), np.uint8))
    if args.batch * sample.size > MAX_EXPORT_INPUT:
        raise UsageError(f"--batch {args.batch} of {list(sample.shape[1:])} inputs is more than "
                         f"{MAX_EXPORT_INPUT:,} input values; lower --batch")
    result = export.export(loaded.model, loaded.variables, sample, weights=args.weights,
                           batch=args.batch, methods=export.stored_methods(loaded.header),
                           sparse=not args.dense)
    archive.write_atomic(args.out, result.tflite)
    print(export.format_layers(result.layers))
    if note := export.sparse_note(result.layers):
        print(note)
    zyl = os.path.getsize(args.file)
    print(f"download (gzip -9 of the .tflite): {result.download_bytes:,} bytes, "
          f"{result.download_bytes / zyl:.2f}x the {zyl:,}-byte .zyl")
    print(f"wrote {args.out}: {len(result.tflite):,} bytes, weights {args.weights}; input float32 "
          f"{result.input_shape} = {loaded.preprocess}; max |LiteRT - JAX| "
          f"{result.max_output_diff:.2g} on a random image")
