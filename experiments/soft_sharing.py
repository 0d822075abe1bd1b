"""Soft weight-sharing (``methods.soft_share``, Ullrich et al. 2017) on LeNet-300-100, then one
epoch of k-means codebook retraining (``methods.share``, 4 bits): the figures behind RESULTS.md
"Soft weight-sharing".

Run:
  python -m experiments.soft_sharing --out runs/soft_sharing

The registry's LeNet-300-100 baseline (cached under ``runs/`` as ``zylax compress --net
lenet300`` caches it) retrains ``--epochs`` epochs under the mixture prior at a fixed Adam
rate of 1e-3, batches of 256, once per starting component width in ``--initial-std``; each
file is written, read back and scored on all 10,000 test images. Prints one Markdown row per
file and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from zylax import compress, data, methods
from experiments.budget_pareto import registry_baseline


def nonzero_fraction(variables: dict) -> float:
    """The fraction of non-zero kernel weights of decoded ``variables``."""
    kernels = [np.asarray(layer["kernel"]) for layer in variables["params"].values()]
    return float(sum(np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels))


def measured(chain: list, out: str, trained: tuple, train_data, test_data) -> dict:
    """``compress.run`` of ``chain`` on ``trained`` (``registry_baseline``) at a fixed Adam
    rate of 1e-3 and batches of 256, writing ``out``: its bytes, ratio, non-zero fraction,
    dense and from-the-file accuracies."""
    model, variables, preprocess, _, metadata = trained
    result = compress.run(model, variables, train_data, test_data, chain, out=out,
                          preprocess=preprocess, progress=False,
                          retrain=compress.Retrain(learning_rate=1e-3, batch_size=256),
                          metadata={**metadata, "data": "fashion_mnist"})
    rep = result.report
    return {"file_bytes": rep["file_bytes"], "ratio": rep["ratio"],
            "nonzero": nonzero_fraction(result.variables),
            "dense_accuracy": rep["dense_accuracy"], "file_accuracy": rep["compressed_accuracy"]}


def sweep(out: str, runs: list, net: str = "lenet300") -> None:
    """Compresses the registry's ``net`` baseline once per ``(settings, chain, name)`` of
    ``runs``: ``measured`` writes ``<out>/<name>``; prints one Markdown row per file (the
    ``settings`` values first) and writes every row to ``<out>/results.json``."""
    os.makedirs(out, exist_ok=True)
    train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
    trained = registry_baseline(net, train_data)
    columns = [*(key.replace("_", " ") for key in runs[0][0]), "file bytes", "ratio",
               "non-zero", "dense", "from the file", "drop"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    results = []
    for settings, chain, name in runs:
        row = {"net": net, "file": name, **settings,
               **measured(chain, os.path.join(out, name), trained, train_data, test_data)}
        results.append(row)
        cells = [f"{value:g}" for value in settings.values()] + [
            f"{row['file_bytes']:,}", f"{row['ratio']:.1f}x", f"{100 * row['nonzero']:.1f}%",
            f"{100 * row['dense_accuracy']:.2f}%", f"{100 * row['file_accuracy']:.2f}%",
            f"{100 * (row['dense_accuracy'] - row['file_accuracy']):.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/soft_sharing")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--initial-std", type=float, nargs="+", default=[0.1, 0.25])
    args = parser.parse_args()
    sweep(args.out, [({"initial_std": std, "tau": args.tau, "epochs": args.epochs},
                      [methods.soft_share(initial_std=std, tau=args.tau, epochs=args.epochs),
                       methods.share(bits=4, epochs=1)],
                      f"lenet300-std{std:g}.zyl") for std in args.initial_std])


if __name__ == "__main__":
    main()
