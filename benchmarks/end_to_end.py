"""Wall time of ``zylax compress`` for LeNet-300-100, per stage, from a fresh work folder.

Run: python -m benchmarks.end_to_end
Stages: train (dense baseline), then each compression stage (the time after
it, from ``report["stage_scores"]``) and saving, reloading and scoring the file.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common import print_table
from zylax import compress, data, registry, train


def run(net: str = "lenet300") -> dict:
    spec = registry.get(net)
    preprocess = data.preprocessing("fashion_mnist", spec.recipe.pad_to)
    preset = compress.Preset(**next(iter(spec.compression.values())))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_data = data.load("fashion_mnist", "train")
        test_data = data.load("fashion_mnist", "test")
        model = spec.factory(data.num_classes(train_data[1]))
        t_train = time.perf_counter()
        baseline = train.fit_recipe(model, spec.recipe, train_data, preprocess=preprocess,
                                    progress=False)
        t_train = time.perf_counter() - t_train
        retrain = compress.Retrain(**{"batch_size": spec.recipe.batch_size, **preset.retrain})
        result = compress.run(model, baseline.variables, train_data, test_data, preset.chain(),
                              out=f"{tmp}/model.zyl", retrain=retrain, preprocess=preprocess,
                              fold_batch_norm=preset.fold_batch_norm,
                              metadata={"net": net, "data": "fashion_mnist"},
                              reference=spec.reference, progress=False)
        total = time.perf_counter() - t0
    rows, before = result.report["stage_scores"], 0.0
    seconds = {"train": t_train}
    for row in rows:
        seconds[row["stage"]], before = row["seconds"] - before, row["seconds"]
    seconds["save, load, evaluate"] = result.report["seconds"]["save_load_evaluate"]
    rows = [[stage, f"{s:.1f}", f"{100 * s / total:.0f}%"] for stage, s in seconds.items()]
    rows.append(["total (incl. data loading)", f"{total:.1f}", "100%"])
    print_table(f"zylax compress --net {net}: wall time per stage (s)",
                ["stage", "seconds", "share"], rows)
    print(f"ratio {result.report['ratio']:.1f}x, dense {100 * result.report['dense_accuracy']:.2f}%"
          f", compressed {100 * result.report['compressed_accuracy']:.2f}%")
    return {"seconds": seconds, "total": total, "report": result.report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--net", default="lenet300")
    args = parser.parse_args()
    run(args.net)


if __name__ == "__main__":
    main()
