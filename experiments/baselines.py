"""Dense baselines on real Fashion-MNIST: LeNet-300-100 and LeNet-5.

Run: python -m experiments.baselines [--nets lenet300 lenet5] [--out runs/baselines]
Prints one row per net (test accuracy, wall time) and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from zylax import data, registry, train


def run(net: str, out: str, seed: int = 0) -> dict:
    """Trains ``net`` with its recipe; returns accuracy and seconds."""
    spec = registry.get(net)
    train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
    model = spec.factory(10)
    preprocess = data.preprocessing("fashion_mnist", spec.recipe.pad_to)
    t0 = time.perf_counter()
    result = train.fit_recipe(model, spec.recipe, train_data, preprocess=preprocess, seed=seed,
                              eval_data=test_data, progress=False,
                              checkpoint_dir=os.path.join(out, net, "checkpoints"))
    seconds = time.perf_counter() - t0
    metrics = train.evaluate(model, result.variables, *test_data, preprocess=preprocess)
    return {"net": net, "epochs": spec.recipe.epochs, "test_accuracy": metrics["accuracy"],
            "seconds": round(seconds, 1), "history": result.history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nets", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--out", default="runs/baselines")
    args = parser.parse_args()
    rows = [run(net, args.out) for net in args.nets]
    for row in rows:
        print(f"{row['net']:10s} epochs {row['epochs']:3d}  test accuracy "
              f"{row['test_accuracy']:.4f}  {row['seconds']:.0f} s")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "baselines.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
