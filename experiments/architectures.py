"""Small architectures on real Fashion-MNIST at 32x32, then compressed.

Run:
  python -m experiments.architectures train [--nets squeezenet1_1 mobilenet_v1 mobilenet_v2 sepnet]
  python -m experiments.architectures squeezenet-compress   # Deep Compression of SqueezeNet 1.1
  python -m experiments.architectures sepnet-patterns [--finetune-epochs 8]   # SEP-Net patterns

Each part writes its results, reports (JSON + Markdown) and ``.zyl`` files to
runs/architectures/; accuracies of compressed nets are measured on the decoded files.

Grouped and depthwise convolutions use ``TapConv`` (same parameters as
``nn.Conv``, several times faster on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import optax

from zylax import archive, compress, data, nets, recipes, report, train
from zylax.nets.layers import TapConv
from zylax.transforms import pattern
from zylax.transforms import tree as ztree

NAME = "fashion_mnist"
OUT = "runs/architectures"
# sepnet-patterns: 8 epochs gave a 1.04-point drop (RESULTS.md); 6 left 2.02 on an AdamW baseline
PATTERN_FINETUNE_EPOCHS = 8
MODELS = {
    "squeezenet1_1": lambda: nets.get("squeezenet1_1", 10),
    "mobilenet_v1": lambda: nets.MobileNetV1(alpha=0.5, num_classes=10, conv=TapConv),
    "mobilenet_v2": lambda: nets.MobileNetV2(width_multiplier=0.5, num_classes=10, conv=TapConv),
    "sepnet": lambda: nets.SEPNet(num_classes=10, conv=TapConv),
}
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


def train_net(net: str, out: str = OUT, epochs: int | None = None) -> dict:
    """Trains ``net`` with its recipe (checkpointed, resumable); returns accuracy and time."""
    recipe = recipes.get(net)
    epochs = epochs or recipe.epochs
    train_data, test_data = data.load(NAME, "train"), data.load(NAME, "test")
    model = MODELS[net]()
    steps = epochs * data.num_batches(train_data[0].shape[0], recipe.batch_size, "drop")
    t0 = time.perf_counter()
    result = train.fit(model, recipe.optimizer(steps), train_data, name=NAME, epochs=epochs,
                       **recipe.fit_kwargs(), eval_data=test_data,
                       checkpoint_dir=os.path.abspath(os.path.join(out, net, "baseline")),
                       progress=False, on_epoch=_log_epoch(net))
    seconds = time.perf_counter() - t0
    accuracy = train.evaluate(model, result.state.params, *test_data, name=NAME,
                              batch_stats=result.state.batch_stats, pad_to=recipe.pad_to)
    s = nets.summary(model, (32, 32, 1), print_table=False)
    return {"net": net, "model": LABELS[net], "epochs": epochs,
            "test_accuracy": accuracy["accuracy"], "seconds": round(seconds, 1),
            "params": s.params, "macs_32x32": s.macs, "history": result.history}


def squeezenet_compress(out: str = OUT) -> dict:
    """Deep Compression of SqueezeNet 1.1, reusing its trained checkpoint as the baseline."""
    config = compress.config_for(
        "squeezenet1_1", sparsity={".*conv1/kernel": 0.3, ".*conv10/kernel": 0.5, ".*kernel": 0.7},
        bits={".*": 6}, index_bits="auto", prune_cycles=3, retrain_epochs=2,
        retrain_lr_scale=0.5, retrain_l2=5e-4, finetune_epochs=1)
    # compress.run keeps its baseline in <workdir>/baseline: the checkpoint train_net wrote
    result = compress.run(config, os.path.join(out, "squeezenet1_1.zyl"),
                          workdir=os.path.join(out, "squeezenet1_1"), progress=False)
    rep = result.report
    report.write(rep, os.path.join(out, "squeezenet1_1_report.json"))
    print(report.format_table(rep))
    return rep


def sepnet_patterns(out: str = OUT, finetune_epochs: int = PATTERN_FINETUNE_EPOCHS,
                    finetune_lr: float = 5e-4) -> dict:
    """Pattern-binarizes every k x k (k > 1) conv of the trained SEP-Net, fine-tunes, writes a file.

    The file holds the scales and 1-bit patterns, the float leaves and the
    BatchNorm statistics; the reported accuracy is measured on the decoded file.
    Fine-tuning (Adam, cosine from ``finetune_lr``) trains the scales, the
    float leaves and, through training-mode BatchNorm, the running statistics,
    which binarization leaves stale.
    """
    recipe = recipes.get("sepnet")
    train_data, test_data = data.load(NAME, "train"), data.load(NAME, "test")
    model = MODELS["sepnet"]()
    steps = recipe.epochs * data.num_batches(train_data[0].shape[0], recipe.batch_size, "drop")
    trained = train.fit(model, recipe.optimizer(steps), train_data, name=NAME,
                        epochs=recipe.epochs, **recipe.fit_kwargs(),
                        checkpoint_dir=os.path.abspath(os.path.join(out, "sepnet", "baseline")),
                        progress=False).state
    evaluate = lambda params, stats: train.evaluate(  # noqa: E731
        model, params, *test_data, name=NAME, batch_stats=stats, pad_to=recipe.pad_to)["accuracy"]
    float_accuracy = evaluate(trained.params, trained.batch_stats)
    latent, patterns = pattern.binarize_patterns(jax.device_get(trained.params))
    before = evaluate(pattern.apply(latent, patterns), trained.batch_stats)
    t0 = time.perf_counter()
    ft_steps = finetune_epochs * data.num_batches(train_data[0].shape[0], recipe.batch_size, "drop")
    tuned = train.fit(model, optax.adam(optax.cosine_decay_schedule(finetune_lr, ft_steps)),
                      train_data, name=NAME, epochs=finetune_epochs, params=latent,
                      batch_stats=trained.batch_stats, transform=pattern.apply, aux=patterns,
                      **recipe.fit_kwargs(), progress=False,
                      on_epoch=_log_epoch("sepnet pattern fine-tune")).state
    finetune_seconds = time.perf_counter() - t0
    stem = os.path.join(out, "sepnet_patterns")
    path = stem + ".zyl"
    metadata = {"net": "sepnet", "data": NAME, "num_classes": 10, "pad_to": recipe.pad_to}
    file_bytes = archive.save(path, jax.device_get(tuned.params), patterns=patterns,
                              batch_stats=jax.device_get(tuned.batch_stats), metadata=metadata)
    variables, header = archive.load_variables(path)
    from_file = evaluate(variables["params"], variables["batch_stats"])
    in_memory = {"params": pattern.apply(jax.device_get(tuned.params), patterns),
                 "batch_stats": jax.device_get(tuned.batch_stats)}
    exact = ztree.bit_identical(variables, in_memory)
    rep = report.build(header, file_bytes=file_bytes,
                       accuracies={"dense": float_accuracy, "compressed": from_file},
                       seconds={"finetune": finetune_seconds}, decoded_exactly=exact)
    rep.update(binarized_before_finetune=before,
               binarized_weights=sum(int(p.size) for p in patterns.values()),
               total_params=nets.param_count(trained.params))
    report.write(rep, stem + "_report.json")
    print(report.format_table(rep))
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["train", "squeezenet-compress", "sepnet-patterns"])
    parser.add_argument("--nets", nargs="+", default=list(MODELS))
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--finetune-epochs", type=int, default=PATTERN_FINETUNE_EPOCHS,
                        help="sepnet-patterns: epochs of fine-tuning after binarizing")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.part == "train":
        for net in args.nets:
            row = train_net(net, args.out)
            print(f"{row['model']:28s} {row['epochs']} epochs  test accuracy "
                  f"{100 * row['test_accuracy']:.2f}%  {row['seconds']:.0f} s  "
                  f"{row['params']:,} params  {row['macs_32x32']:,} MACs", flush=True)
            with open(os.path.join(args.out, f"{net}.json"), "w") as f:
                json.dump(row, f, indent=1)
    elif args.part == "squeezenet-compress":
        squeezenet_compress(args.out)
    else:
        sepnet_patterns(args.out, finetune_epochs=args.finetune_epochs)


if __name__ == "__main__":
    main()
