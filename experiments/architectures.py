"""Small architectures on real Fashion-MNIST at 32x32: test accuracy after every epoch.

Run:
  python -m experiments.architectures [--nets squeezenet1_1 mobilenet_v1 mobilenet_v2 sepnet]

For each registered net it trains with the net's recipe (checkpointed, so a
second run reloads it), scores the test split after every epoch, and writes
``runs/architectures/<net>.json`` (accuracy, time, parameters, MACs). Their
compression is ``zylax compress --net NET [--method ...]`` (RESULTS.md).
Grouped and depthwise convolutions use ``TapConv``: the same parameters as
``nn.Conv``, several times faster on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time


from zylax import data, nets, registry, train

NAME = "fashion_mnist"
OUT = "runs/architectures"
NETS = ("squeezenet1_1", "mobilenet_v1", "mobilenet_v2", "sepnet")  # in zylax.registry
LABELS = {"squeezenet1_1": "SqueezeNet 1.1",
          "mobilenet_v1": "MobileNet V1 (alpha 0.5)",
          "mobilenet_v2": "MobileNet V2 (width 0.5)", "sepnet": "SEP-Net (groups 4)"}


def _log_epoch(label: str):
    """An ``on_epoch`` callback printing one line per epoch."""
    def log(row: dict) -> None:
        test = f"  test {100 * row['test_accuracy']:.2f}%" if "test_accuracy" in row else ""
        print(f"{label} epoch {row['epoch']}: train loss {row['train_loss']:.4f} "
              f"acc {100 * row['train_accuracy']:.2f}%{test}  "
              f"{row['examples_per_s']:.0f} ex/s", flush=True)
    return log


def _setup(net: str):
    spec = registry.get(net)
    return (spec, spec.factory(10), data.preprocessing(NAME, spec.recipe.pad_to),
            data.load(NAME, "train"), data.load(NAME, "test"))


def _baseline(net: str, out: str, **kwargs):
    """The registered net trained with its recipe (checkpointed: a second call reloads it)."""
    spec, model, prep, train_data, test_data = _setup(net)
    result = train.fit_recipe(model, spec.recipe, train_data, preprocess=prep, progress=False,
                              checkpoint_dir=os.path.abspath(os.path.join(out, net, "baseline")),
                              **kwargs)
    return spec, model, prep, train_data, test_data, result


def train_net(net: str, out: str = OUT) -> dict:
    """Trains ``net`` with its recipe (checkpointed, resumable); returns accuracy and time."""
    t0 = time.perf_counter()
    spec, model, prep, _, test_data, result = _baseline(net, out, eval_data=data.load(NAME, "test"),
                                                        on_epoch=_log_epoch(net))
    seconds = time.perf_counter() - t0
    accuracy = train.evaluate(model, result.variables, *test_data, preprocess=prep)
    s = nets.summary(model, (32, 32, 1), print_table=False)
    return {"net": net, "model": LABELS[net], "epochs": spec.recipe.epochs,
            "test_accuracy": accuracy["accuracy"], "seconds": round(seconds, 1),
            "params": s.params, "macs_32x32": s.macs, "history": result.history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=list(NETS))
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for net in args.nets:
        row = train_net(net, args.out)
        print(f"{row['model']:28s} {row['epochs']} epochs  test accuracy "
              f"{100 * row['test_accuracy']:.2f}%  {row['seconds']:.0f} s  "
              f"{row['params']:,} params  {row['macs_32x32']:,} MACs", flush=True)
        with open(os.path.join(args.out, f"{net}.json"), "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
