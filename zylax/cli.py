"""The ``zylax`` command line: ``train``, ``compress``, ``evaluate``, ``inspect``."""

from __future__ import annotations

import argparse
import os
import sys

from zylax import data as zdata
from zylax import nets, recipes


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", default="lenet300", help=f"one of {sorted(nets.NETS)}")
    parser.add_argument("--data", default="fashion_mnist", help=f"one of {zdata.DATASETS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _check_names(args) -> None:
    if args.net not in nets.NETS:
        raise SystemExit(f"zylax: unknown net {args.net!r}; choose one of {sorted(nets.NETS)}")
    if args.data not in zdata.DATASETS:
        raise SystemExit(f"zylax: unknown dataset {args.data!r}; choose one of {zdata.DATASETS}")


def load_data(name: str):
    """Train and test splits, or a clean exit with the install hint."""
    try:
        return zdata.load(name, "train"), zdata.load(name, "test")
    except zdata.DatasetNotFoundError as err:
        raise SystemExit(f"zylax: {err}") from err


def cmd_train(args) -> None:
    """Trains a baseline and prints its test accuracy and checkpoint folder."""
    from zylax import train

    _check_names(args)
    recipe = recipes.get(args.net)
    epochs = recipe.epochs if args.epochs is None else args.epochs
    batch_size = args.batch_size or recipe.batch_size
    (train_data, test_data) = load_data(args.data)
    model = nets.get(args.net, zdata.num_classes(train_data[1]))
    steps = epochs * zdata.num_batches(train_data[0].shape[0], batch_size, "drop")
    checkpoint_dir = os.path.join(os.path.abspath(args.out), "checkpoints")
    result = train.fit(model, recipe.optimizer(steps), train_data, name=args.data, epochs=epochs,
                       **{**recipe.fit_kwargs(), "batch_size": batch_size}, seed=args.seed,
                       checkpoint_dir=checkpoint_dir, max_steps=args.max_steps,
                       progress=False if args.quiet else None)
    metrics = train.evaluate(model, result.state.params, *test_data, name=args.data,
                             batch_stats=result.state.batch_stats, pad_to=recipe.pad_to)
    print(f"{args.net} on {args.data}: test accuracy {metrics['accuracy']:.4f} "
          f"after {int(result.state.step)} steps")
    print(f"checkpoint: {checkpoint_dir}")


def cmd_compress(args) -> None:
    """Runs Deep Compression end to end and prints the Han-style table."""
    from zylax import compress, report

    _check_names(args)
    overrides = {k: v for k, v in (("baseline_epochs", args.baseline_epochs),
                                   ("prune_cycles", args.prune_cycles),
                                   ("retrain_epochs", args.retrain_epochs),
                                   ("finetune_epochs", args.finetune_epochs),
                                   ("bits", args.bits), ("index_bits", args.index_bits),
                                   ("max_examples", args.max_examples)) if v is not None}
    config = compress.config_for(args.net, data=args.data, seed=args.seed, **overrides)
    workdir = args.workdir or os.path.join("runs", f"{args.net}-{args.data}-seed{args.seed}")
    try:
        result = compress.run(config, args.out, workdir=workdir,
                              progress=False if args.quiet else None)
    except compress.zdata.DatasetNotFoundError as err:
        raise SystemExit(f"zylax: {err}") from err
    rep = result.report
    print(report.format_table(rep))
    written = [args.out]
    if args.report:
        written += report.write(rep, args.report)
        stem = os.path.splitext(args.report)[0]
        largest = max((r for r in rep["layers"] if r["method"] != "raw"),
                      key=lambda r: r["weights"])["name"]
        written.append(report.plot_weights(result.snapshots, result.masks, largest,
                                           f"{stem}_weights.png"))
        written.append(report.plot_kept(rep, f"{stem}_kept.png"))
    print("wrote " + ", ".join(written))


def _load_archive(path: str):
    from zylax import archive

    try:
        return archive.load_variables(path)
    except FileNotFoundError as err:
        raise SystemExit(f"zylax: no such file {path}") from err
    except archive.CorruptFileError as err:
        raise SystemExit(f"zylax: {path}: {err}") from err


def cmd_evaluate(args) -> None:
    """Test accuracy of a ``.zyl`` file, from the file alone."""
    from zylax import train

    variables, header = _load_archive(args.file)
    meta = header["metadata"]
    name = args.data or meta["data"]
    _, test_data = load_data(name)
    model = nets.get(meta["net"], meta.get("num_classes", 10))
    metrics = train.evaluate(model, variables["params"], *test_data, name=name,
                             batch_stats=variables.get("batch_stats"), pad_to=meta.get("pad_to"))
    print(f"{args.file}: {meta['net']} on {name}: test accuracy {metrics['accuracy']:.4f}")


def cmd_inspect(args) -> None:
    """The per-layer table of a ``.zyl`` file."""
    from zylax import report

    _, header = _load_archive(args.file)
    size = os.path.getsize(args.file)
    rep = report.build(header, file_bytes=size, accuracies={})
    print(report.format_table(rep))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zylax`` command."""
    parser = argparse.ArgumentParser(prog="zylax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a baseline net")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--out", required=True, help="output folder (checkpoints go inside)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="Deep Compression: prune, share, Huffman-code, verify")
    _add_common(p)
    p.add_argument("--out", default="model.zyl", help="compressed model file")
    p.add_argument("--report", default=None, help="report JSON (Markdown and PNGs beside it)")
    p.add_argument("--workdir", default=None, help="keeps the baseline checkpoint for reuse")
    p.add_argument("--baseline-epochs", type=int, default=None)
    p.add_argument("--prune-cycles", type=int, default=None)
    p.add_argument("--retrain-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--bits", type=int, default=None, help="weight bits for every layer")
    p.add_argument("--index-bits", type=int, default=None, help="gap bits for every layer")
    p.add_argument("--max-examples", type=int, default=None, help="train on a prefix (smoke)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("evaluate", help="test accuracy of a .zyl file")
    p.add_argument("file")
    p.add_argument("--data", default=None, help="dataset (default: the one in the file)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="per-layer table of a .zyl file")
    p.add_argument("file")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zylax`` console script."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
