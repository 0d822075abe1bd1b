"""The most accurate file under each of several byte budgets, for a registered net and for a
user's own BatchNorm CNN: the figures and the plot behind RESULTS.md "Budget in, model out".

Run:
  python -m experiments.budget_pareto --out runs/budget_pareto

For each model, the sensitivity curves are measured once (``budget.plan``; on the held-out
last tenth of the training images, never the test set), then every budget runs
``budget.run``: per-layer sparsity and shared bits (or float; with ``--forms``, ternary or
binary too) chosen by the knapsack, positions coded as ANS masks or Huffman gaps (the smaller), one epoch of
retraining per stage, the file written, read back and scored on all 10,000 test images.
LeNet-300-100 is the registry's baseline (trained by its recipe, cached under ``runs/`` as
``zylax compress --net lenet300`` caches it); the user's CNN is ``experiments.user_model``'s
``MyNet`` (its own layer names, BatchNorm, a ``training`` flag) trained by its own optax loop
on all 60,000 training images. No per-layer value is set by hand for either. Each file is
also exported as ``zylax compress --tflite`` exports it (``shipped``): its download (gzip -9
of the ``.tflite``) and its top-1 in the LiteRT interpreter on the same 10,000 images. Prints
one Markdown row per file and writes ``<out>/<model>-<budget>.zyl`` and ``.tflite``,
``<out>/results.json`` and ``<out>/pareto.png``.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from zylax import archive, baseline, budget, compress, data, export, report, tasks
from experiments.user_model import MyNet, train_own_loop

BUDGETS = {"lenet300": (12_000, 16_000, 23_000, 40_000),
           "user CNN (BatchNorm)": (8_000, 12_000, 20_000, 40_000)}
"""File budgets in bytes per model."""


def _setting(option: budget.Option) -> str:
    """``sparsity/bits``, ``ternary``, ``binary`` or ``float``: how the plan stores a kernel."""
    if option.bits is None:
        return option.form or "float"
    return f"{option.sparsity:g}/{option.bits}"


def shipped(model, variables, path: str, preprocess, test_data) -> dict:
    """The file at ``path`` (``variables``: as decoded from it) exported as ``zylax compress
    --tflite`` exports it (weights auto, batch 1, written beside it) and scored in the LiteRT
    interpreter on ``test_data``: its download bytes (gzip -9) and top-1."""
    result, litert = export.ship(model, variables, *test_data, task=tasks.Classification(),
                                 preprocess=preprocess,
                                 out=os.path.splitext(path)[0] + ".tflite",
                                 methods=export.stored_methods(archive.read_header(path)))
    return {"tflite_bytes": len(result.tflite), "download_bytes": result.download_bytes,
            "litert": litert["accuracy"]}


def registry_baseline(net: str, train_data):
    """The registry's ``net`` baseline (its recipe, seed 0), reused from the CLI's cache
    (``runs/<net>-fashion_mnist-seed0``) when there."""
    choice = baseline.choose_model(net, None, None, None)
    folder = baseline.baseline_dir(os.path.join("runs", f"{net}-fashion_mnist-seed0"),
                                   choice, data="fashion_mnist", seed=0,
                                   epochs=choice.recipe.epochs, max_examples=None,
                                   train_flag=None)
    preprocess = data.preprocessing("fashion_mnist")
    model, task, trained = baseline.train_baseline(
        choice, train_data, preprocess, epochs=choice.recipe.epochs, seed=0,
        checkpoint_dir=folder, dataset=data.get("fashion_mnist"), quiet=True)
    retrain = compress.Retrain(batch_size=choice.recipe.batch_size)
    return model, trained.variables, preprocess, retrain, {"net": net}


def lenet300(train_data):
    """The registry's LeNet-300-100 baseline (``registry_baseline``)."""
    return registry_baseline("lenet300", train_data)


def user_cnn(train_data):
    """``MyNet`` trained by its own loop (Adam 1e-3, batches of 100, 3 epochs)."""
    model, preprocess = MyNet(), data.preprocessing("fashion_mnist")
    images, labels = train_data
    variables = model.init(jax.random.key(0), preprocess(images[:1]))
    variables = train_own_loop(model, variables, images, labels, preprocess, epochs=3)
    return model, jax.device_get(variables), preprocess, compress.Retrain(), {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/budget_pareto")
    parser.add_argument("--forms", nargs="+", default=[], choices=("ternary", "binary"),
                        help="whole-layer quantizers the plans may also choose")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
    results, series, dense = {}, {}, {}
    print("| model | budget | plan predicted | written | under budget | dense | from the file | "
          "drop | ratio | download (x file) | LiteRT | layers (sparsity/bits) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, build in (("lenet300", lenet300), ("user CNN (BatchNorm)", user_cnn)):
        model, variables, preprocess, retrain, metadata = build(train_data)
        curves = None
        for limit in BUDGETS[label]:
            out = os.path.join(args.out, f"{label.split()[0].lower()}-{limit}.zyl")
            found, result = budget.run(model, variables, train_data, test_data, out=out,
                                       budget=limit, preprocess=preprocess, retrain=retrain,
                                       metadata={**metadata, "data": "fashion_mnist"},
                                       curves=curves, progress=False,
                                       forms=tuple(args.forms))
            curves = found.curves
            rep = result.report
            written = os.path.getsize(out)
            rep["export"] = shipped(model, result.variables, out, preprocess, test_data)
            series.setdefault(label, []).append((written, rep["compressed_accuracy"]))
            dense[label] = rep["dense_accuracy"]
            layers = ", ".join(f"{n.split('/')[0]} {_setting(o)}" for n, o in found.choice.items())
            download = rep["export"]["download_bytes"]
            print(f"| {label} | {limit:,} | {found.predicted_bytes:,} | {written:,} | "
                  f"{'yes' if written <= limit else 'NO'} | {rep['dense_accuracy']:.2%} | "
                  f"{rep['compressed_accuracy']:.2%} | "
                  f"{100 * (rep['dense_accuracy'] - rep['compressed_accuracy']):.2f} | "
                  f"{rep['ratio']:.1f}x | {download:,} ({download / written:.2f}x) | "
                  f"{rep['export']['litert']:.2%} | {layers} |", flush=True)
            results[f"{label} {limit}"] = rep
    fig = report.plot_pareto(series, dense=dense)
    fig.savefig(os.path.join(args.out, "pareto.png"), dpi=100)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=lambda x: np.asarray(x).tolist())
    print(f"wrote {args.out}/results.json, {args.out}/pareto.png")


if __name__ == "__main__":
    main()
