"""Short DeepLabV3Small runs from a pretrained trunk, one per optimizer setting.

Each setting trains the registered ``deeplabv3_mobilenet_v2`` net from the
same warm start (``train.warm_start`` of ``--init-from``) on the first
``--train-examples`` training scenes for ``--epochs`` mirrored epochs at batch
16 (300 warmup steps, cosine decay to zero over the run) and scores mIoU on
the first ``--test-examples`` test scenes. A setting is ``adamw:LR`` (AdamW,
decoupled weight decay 1e-4, the scene recipe's) or ``sgd:LR`` (Nesterov
momentum 0.9, L2 4e-5, DeepLab's own optimizer). RESULTS.md, "DeepLabV3 at a
higher learning rate"::

    python -m experiments.deeplab_lr_sweep runs/scenes/trunk_sgd/model.zyl \\
        adamw:2e-3 sgd:0.01 sgd:0.03 adamw:5e-3 adamw:1e-2
"""

from __future__ import annotations

import argparse
import json
import time

from zylax import archive, data, registry, tasks, train

WARMUP_STEPS = 300


def recipe(setting: str, epochs: int) -> train.Recipe:
    """The ``train.Recipe`` of an ``adamw:LR`` or ``sgd:LR`` setting at batch 16."""
    kind, _, rate = setting.partition(":")
    if kind not in ("adamw", "sgd"):
        raise ValueError(f"setting {setting!r}: expected adamw:LR or sgd:LR")
    sgd = kind == "sgd"
    return train.Recipe(epochs=epochs, batch_size=16, learning_rate=float(rate),
                        weight_decay=4e-5 if sgd else 1e-4, warmup_steps=WARMUP_STEPS,
                        augment=True, sgd_momentum=0.9 if sgd else None)


def score(donor: dict, setting: str, train_data, test_data, epochs: int) -> dict:
    """Trains one setting from ``donor``'s matching layers; its test scores and minutes."""
    model = registry.get("deeplabv3_mobilenet_v2").factory(11)
    preprocess = data.preprocessing("fashion_mnist_scenes")
    variables, _ = train.warm_start(train.init_variables(model, preprocess(train_data[0][:1]), 0),
                                    donor)
    task = tasks.Segmentation(11)
    start = time.perf_counter()
    result = train.fit_recipe(model, recipe(setting, epochs), train_data, preprocess=preprocess,
                              progress=False, task=task, variables=variables)
    minutes = (time.perf_counter() - start) / 60
    metrics = task.evaluate(model, result.variables, *test_data, preprocess=preprocess)
    return {"setting": setting, "train_minutes": round(minutes, 2),
            "mIoU": round(float(metrics["mIoU"]), 4),
            "pixel_accuracy": round(float(metrics["pixel_accuracy"]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("init_from", help="a .zyl file whose trunk starts every run")
    parser.add_argument("settings", nargs="+", help="adamw:LR or sgd:LR")
    parser.add_argument("--train-examples", type=int, default=12000)
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    for setting in args.settings:
        recipe(setting, args.epochs)  # a bad setting fails before any training
    donor, _ = archive.load(args.init_from)
    train_data = data.prefix(data.load("fashion_mnist_scenes", "train"), args.train_examples)
    test_data = data.prefix(data.load("fashion_mnist_scenes", "test"), args.test_examples)
    for setting in args.settings:
        print(json.dumps(score(donor, setting, train_data, test_data, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
