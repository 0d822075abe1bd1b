"""Small architectures on real Fashion-MNIST at 32x32, then compressed.

Run:
  python -m experiments.architectures train [--nets squeezenet1_1 mobilenet_v1 mobilenet_v2 sepnet]
  python -m experiments.architectures compress --nets squeezenet1_1   # Deep Compression
  python -m experiments.architectures sepnet-patterns [--finetune-epochs 8]   # SEP-Net patterns

Each part writes its results, reports (JSON + Markdown) and ``.zyl`` files to
runs/architectures/; accuracies of compressed nets are measured on the decoded files.

The nets, their recipes and compression presets come from ``zylax.registry``
(grouped and depthwise convolutions use ``TapConv``: same parameters as
``nn.Conv``, several times faster on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import optax

from zylax import archive, codecs, compress, data, nets, registry, report, train
from zylax.transforms import pattern
from zylax.transforms import tree as ztree

NAME = "fashion_mnist"
OUT = "runs/architectures"
# sepnet-patterns: 8 epochs gave a 1.04-point drop (RESULTS.md); 6 left 2.02 on an AdamW baseline
PATTERN_FINETUNE_EPOCHS = 8
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


def deep_compress(net: str, out: str = OUT) -> dict:
    """Deep Compression of a trained registered net with its preset (BatchNorm stats in the file).

    Same as ``zylax compress --net NET``, reusing this experiment's baseline checkpoint.
    """
    spec, model, prep, train_data, test_data, baseline = _baseline(net, out)
    config = compress.Config(**spec.compression, recipe=spec.recipe, preprocess=prep)
    result = compress.run(model, baseline.variables, train_data, test_data, config,
                          out=os.path.join(out, f"{net}.zyl"),
                          metadata={"net": net, "data": NAME}, reference=spec.reference,
                          progress=False)
    rep = result.report
    report.write(rep, os.path.join(out, f"{net}_report.json"))
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
    spec, model, prep, train_data, test_data, trained = _baseline("sepnet", out)
    evaluate = lambda variables: train.evaluate(  # noqa: E731
        model, variables, *test_data, preprocess=prep)["accuracy"]
    dense = trained.variables
    float_accuracy = evaluate(dense)
    latent, patterns = pattern.binarize_patterns(dense["params"])
    before = evaluate({**dense, "params": pattern.apply(latent, patterns)})
    t0 = time.perf_counter()
    ft_steps = finetune_epochs * data.num_batches(train_data[0].shape[0],
                                                  spec.recipe.batch_size, "drop")
    tuned = train.fit(model, optax.adam(optax.cosine_decay_schedule(finetune_lr, ft_steps)),
                      train_data, epochs=finetune_epochs, preprocess=prep,
                      variables={**dense, "params": latent}, transform=pattern.apply,
                      aux=patterns, **spec.recipe.fit_kwargs(), progress=False,
                      on_epoch=_log_epoch("sepnet pattern fine-tune")).variables
    finetune_seconds = time.perf_counter() - t0
    stem = os.path.join(out, "sepnet_patterns")
    path = stem + ".zyl"
    metadata = {"net": "sepnet", "data": NAME, "num_classes": 10, "preprocess": prep.to_dict()}
    stored = {**tuned, "params": pattern.compressed(tuned["params"], patterns)}
    file_bytes = archive.save(path, stored, metadata=metadata)
    variables, _ = archive.load(path)
    from_file = evaluate(variables)
    exact = ztree.bit_identical(variables, jax.tree.map(codecs.dense, stored))
    rep = report.build(archive.read_header(path), file_bytes=file_bytes,
                       accuracies={"dense": float_accuracy, "compressed": from_file},
                       seconds={"finetune": finetune_seconds}, decoded_exactly=exact)
    rep.update(binarized_before_finetune=before,
               binarized_weights=sum(int(p.size) for p in patterns.values()),
               total_params=nets.param_count(dense["params"]))
    report.write(rep, stem + "_report.json")
    print(report.format_table(rep))
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["train", "compress", "sepnet-patterns"])
    parser.add_argument("--nets", nargs="+", default=list(NETS))
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
    elif args.part == "compress":
        for net in args.nets:
            deep_compress(net, args.out)
    else:
        sepnet_patterns(args.out, finetune_epochs=args.finetune_epochs)


if __name__ == "__main__":
    main()
