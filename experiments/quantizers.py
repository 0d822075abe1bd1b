"""Binary and ternary weights on real Fashion-MNIST (issue: BNN, TTQ, SEP-Net patterns).

Run:
  python -m experiments.quantizers bnn       # BNN MLP (det. and stoch. activations) vs float MLP
  python -m experiments.quantizers ttq       # TTQ LeNet-5 vs float LeNet-5, same schedule
  python -m experiments.quantizers pattern   # pattern-binarized LeNet-5 after fine-tuning
Each prints its rows and writes runs/quantizers/<part>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import optax

from zylax import data, nets, train
from zylax.transforms import binary, packing, pattern, ternary
from zylax.transforms import tree as ztree

NAME = "fashion_mnist"


def _data(small: bool):
    train_data, test_data = data.load(NAME, "train"), data.load(NAME, "test")
    if small:
        train_data = tuple(a[:6000] for a in train_data)
    return train_data, test_data


def _schedule(lr: float, epochs: int, n: int, batch: int, final_fraction: float = 0.01):
    steps = epochs * data.num_batches(n, batch, "drop")
    return optax.exponential_decay(lr, steps, final_fraction)


def _fit(model, tx, train_data, test_data, epochs, batch=128, **kwargs):
    t0 = time.perf_counter()
    result = train.fit(model, tx, train_data, name=NAME, epochs=epochs, batch_size=batch,
                       progress=False, **kwargs)
    accuracy = train.evaluate(model, result.state.params, *test_data, name=NAME,
                              batch_stats=result.state.batch_stats, aux=result.state.aux,
                              transform=kwargs.get("transform"))["accuracy"]
    return result, accuracy, time.perf_counter() - t0


def bnn(small: bool = False, epochs: int = 15, out: str | None = None) -> list[dict]:
    """Float MLP vs BNN MLP (binary weights; deterministic or stochastic binary activations)."""
    del out
    train_data, test_data = _data(small)
    epochs = 2 if small else epochs
    n = train_data[0].shape[0]
    rows = []
    float_tx = optax.adam(_schedule(1e-3, epochs, n, 128))
    _, accuracy, seconds = _fit(nets.MLP(), float_tx, train_data, test_data, epochs)
    rows.append({"model": "float MLP 3x1024", "test_accuracy": accuracy, "seconds": seconds})
    for label, model in (("BNN MLP, deterministic sign", nets.MLP(activation=binary.binary_activation)),
                         ("BNN MLP, stochastic sign", nets.MLP(stochastic_activation=True))):
        tx = optax.chain(optax.adam(_schedule(3e-3, epochs, n, 128)), binary.clip_latent())
        result, accuracy, seconds = _fit(model, tx, train_data, test_data, epochs,
                                         transform=binary.binarize)
        kernels = {name: 1 for name in ztree.selected_names(result.state.params)}
        storage = packing.storage_report(result.state.params, kernels)
        binarized = [r for r in storage if r["bits"] == 1]
        rows.append({"model": label, "test_accuracy": accuracy, "seconds": seconds,
                     "binarized_fp32_bytes": sum(r["fp32_bytes"] for r in binarized),
                     "binarized_packed_bytes": sum(r["packed_bytes"] for r in binarized)})
    return rows


def _float_lenet5(train_data, test_data, epochs: int, out: str | None):
    """The float LeNet-5 both TTQ and pattern binarization start from (checkpoint-cached)."""
    n = train_data[0].shape[0]
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, epochs * (n // 128)))
    folder = None if out is None else os.path.abspath(os.path.join(out, "lenet5_float"))
    return _fit(nets.LeNet5(), tx, train_data, test_data, epochs, checkpoint_dir=folder)


def ttq(small: bool = False, epochs: int = 10, out: str | None = None,
        finetune_lr: float = 1e-3, t: float = 0.05, l2: float = 5e-4) -> list[dict]:
    """Float LeNet-5 vs TTQ LeNet-5 fine-tuned from it for the same number of epochs.

    Both use Adam with cosine decay over 10 epochs; the float model starts at
    1e-3, the TTQ fine-tuning at ``finetune_lr``; ``t`` is TTQ's threshold factor and
    ``l2`` an optional L2 penalty on the latent weights.
    """
    train_data, test_data = _data(small)
    epochs = 1 if small else epochs
    n = train_data[0].shape[0]
    model = nets.LeNet5()
    adam = optax.adam(optax.cosine_decay_schedule(finetune_lr, epochs * (n // 128)))
    # optional L2 on the latent weights only (not on the TTQ scales)
    decay = optax.add_decayed_weights(l2, mask=lambda lat: {
        "params": jax.tree.map(lambda _: True, lat["params"]),
        "scales": jax.tree.map(lambda _: False, lat["scales"])})
    tx = lambda: optax.chain(decay, adam) if l2 else adam  # noqa: E731
    float_result, float_accuracy, float_seconds = _float_lenet5(train_data, test_data, epochs, out)
    # TTQ fine-tunes from the float model, as the paper does for AlexNet/ResNets.
    latent = ternary.init(float_result.state.params, t)
    ternarize = functools.partial(ternary.ternarize, t=t)
    t0 = time.perf_counter()
    result = train.fit(model, tx(), train_data, name=NAME, epochs=epochs, params=latent,
                       transform=ternarize, progress=False)
    quantized = ternarize(result.state.params)
    accuracy = train.evaluate(model, quantized, *test_data, name=NAME)["accuracy"]
    names = list(result.state.params["scales"])
    storage = packing.storage_report(quantized, {k: 2 for k in names},
                                     {k: 8 for k in names})
    return [{"model": "float LeNet-5", "test_accuracy": float_accuracy, "seconds": float_seconds},
            {"model": f"TTQ LeNet-5 (conv2, ip1 ternary), lr {finetune_lr:g}, t {t:g}, l2 {l2:g}",
             "test_accuracy": accuracy,
             "seconds": time.perf_counter() - t0,
             "scales": {k: {s: float(v) for s, v in d.items()}
                        for k, d in jax.device_get(result.state.params["scales"]).items()},
             "fp32_bytes": sum(r["fp32_bytes"] for r in storage),
             "packed_bytes": sum(r["packed_bytes"] for r in storage)}]


def pattern_binarization(small: bool = False, epochs: int = 10, finetune_epochs: int = 5,
                         out: str | None = None, finetune_lr: float = 1e-3):
    """Float LeNet-5, then both 5x5 convs pattern-binarized and fine-tuned (alpha + dense)."""
    train_data, test_data = _data(small)
    epochs, finetune_epochs = (1, 1) if small else (epochs, finetune_epochs)
    n = train_data[0].shape[0]
    model = nets.LeNet5()
    float_result, float_accuracy, _ = _float_lenet5(train_data, test_data, epochs, out)
    latent, patterns = pattern.binarize_patterns(float_result.state.params)
    before = train.evaluate(model, pattern.apply(latent, patterns), *test_data, name=NAME)
    t0 = time.perf_counter()
    ft = optax.adam(optax.cosine_decay_schedule(finetune_lr, finetune_epochs * (n // 128)))
    result = train.fit(model, ft, train_data, name=NAME, epochs=finetune_epochs, params=latent,
                       transform=pattern.apply, aux=patterns, progress=False)
    accuracy = train.evaluate(model, pattern.apply(result.state.params, patterns), *test_data,
                              name=NAME)["accuracy"]
    return [{"model": "float LeNet-5", "test_accuracy": float_accuracy},
            {"model": "pattern-binarized LeNet-5, before fine-tuning",
             "test_accuracy": before["accuracy"]},
            {"model": f"pattern-binarized LeNet-5, fine-tuned {finetune_epochs} epochs at lr "
                      f"{finetune_lr:g}", "test_accuracy": accuracy,
             "seconds": time.perf_counter() - t0}]


PARTS = {"bnn": bnn, "ttq": ttq, "pattern": pattern_binarization}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=sorted(PARTS))
    parser.add_argument("--small", action="store_true", help="6,000 images, 1-2 epochs")
    parser.add_argument("--out", default="runs/quantizers")
    parser.add_argument("--ttq-lr", type=float, default=1e-3, help="TTQ fine-tuning peak lr")
    parser.add_argument("--ttq-t", type=float, default=0.05, help="TTQ threshold factor t")
    parser.add_argument("--ttq-l2", type=float, default=5e-4, help="L2 on TTQ latent weights")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for part in args.parts:
        extra = ({"finetune_lr": args.ttq_lr, "t": args.ttq_t, "l2": args.ttq_l2}
                 if part == "ttq" else {})
        rows = PARTS[part](small=args.small, out=None if args.small else args.out, **extra)
        for row in rows:
            print(f"{part:8s} {row['model']:48s} {100 * row['test_accuracy']:.2f}%  "
                  + "  ".join(f"{k}={v}" for k, v in row.items()
                              if k not in ("model", "test_accuracy", "scales")), flush=True)
        with open(os.path.join(args.out, f"{part}.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
