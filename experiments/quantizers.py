"""Binary and ternary weights on real Fashion-MNIST, each measured from its ``.zyl`` file.

Run:
  python -m experiments.quantizers bnn       # BNN MLP 3x2048 (binary weights + activations) -> file
  python -m experiments.quantizers ttq       # pruned + TTQ LeNet-5 -> file, vs float LeNet-5
  python -m experiments.quantizers pattern   # pattern-binarized LeNet-5 -> file
Each prints its rows and writes runs/quantizers/<part>.json and the ``.zyl`` files;
every size is the byte count of the written file and every compressed accuracy
is measured on the model decoded from it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax import archive, codecs, data, nets, registry, train
from zylax.transforms import binary, order, pattern, pruning, ternary
from zylax.transforms import tree as ztree

NAME = "fashion_mnist"
PREP = data.preprocessing(NAME)


def _data(small: bool):
    train_data, test_data = data.load(NAME, "train"), data.load(NAME, "test")
    if small:
        train_data = tuple(a[:6000] for a in train_data)
    return train_data, test_data


def _accuracy(model, variables, test_data, **kwargs) -> float:
    return train.evaluate(model, variables, *test_data, preprocess=PREP, **kwargs)["accuracy"]


def _dense_bytes(variables) -> int:
    return 4 * sum(int(np.size(x)) for x in jax.tree.leaves(variables))


def _from_file(model, stored, path: str, test_data) -> dict:
    """Writes ``stored``, reads it back, evaluates the decoded model; the row of figures."""
    size = archive.save(path, stored, metadata={"data": NAME, "preprocess": PREP.to_dict()})
    loaded, _ = archive.load(path)
    exact = ztree.bit_identical(loaded, jax.tree.map(codecs.dense, stored))
    dense = _dense_bytes(loaded)
    return {"file": path, "file_bytes": size, "dense_fp32_bytes": dense,
            "ratio": dense / size, "file_accuracy": _accuracy(model, loaded, test_data),
            "decoded_exactly": exact}


def _half_precision_vectors(variables):
    """BatchNorm vectors (every leaf not a kernel) in 16 bits: the model we store and evaluate.

    A 1-D vector costs 4 bytes a unit in fp32 against 1 bit a weight for the
    binary kernels; in 16 bits the 3x2048 BNN clears 30x (RESULTS.md). Each
    leaf goes to float16 when its values fit float16's range, else to
    bfloat16 (the running variances of a binary layer reach millions).
    """
    def half(name, x):
        if name.endswith("kernel"):
            return x
        x = np.asarray(x, np.float32)
        fits = np.abs(x).max(initial=0) < np.finfo(np.float16).max
        return x.astype(np.float16 if fits else jnp.bfloat16)
    return {c: ztree.map_named(half, tree) for c, tree in variables.items()}


def bnn(small: bool = False, epochs: int = 15, out: str = "runs/quantizers") -> list[dict]:
    """BNN MLP 3x2048 (binary weights, deterministic binary activations) written as 1-bit codes."""
    train_data, test_data = _data(small)
    epochs = 1 if small else epochs
    hidden = (256, 256) if small else (2048, 2048, 2048)
    model = nets.MLP(hidden=hidden, activation=binary.binary_activation)
    steps = epochs * data.num_batches(train_data[0].shape[0], 128, "drop")
    tx = optax.chain(optax.adam(optax.exponential_decay(3e-3, steps, 0.01)), binary.clip_latent())
    t0 = time.perf_counter()
    folder = None if small else os.path.abspath(os.path.join(out, "bnn_mlp"))
    result = train.fit(model, tx, train_data, epochs=epochs, preprocess=PREP,
                       transform=binary.binarize, checkpoint_dir=folder, progress=False)
    seconds = time.perf_counter() - t0
    latent = result.variables
    in_memory = _accuracy(model, latent, test_data, transform=binary.binarize)
    stored = _half_precision_vectors({**latent, "params": binary.compressed(latent["params"])})
    row = _from_file(model, stored, os.path.join(out, "bnn_mlp.zyl"), test_data)
    return [{"model": f"BNN MLP {'x'.join(map(str, hidden))}, deterministic sign",
             "test_accuracy": in_memory, "seconds": seconds, "epochs": epochs, **row}]


def _float_lenet5(train_data, test_data, out: str | None):
    """The float LeNet-5 of the registry, trained with its recipe (checkpoint-cached)."""
    spec = registry.get("lenet5")
    model = spec.factory(10)
    folder = None if out is None else os.path.abspath(os.path.join(out, "lenet5_float"))
    epochs = 1 if train_data[0].shape[0] < 60000 else None
    result = train.fit_recipe(model, spec.recipe, train_data, preprocess=PREP, epochs=epochs,
                              checkpoint_dir=folder, progress=False)
    return model, result.variables, _accuracy(model, result.variables, test_data)


TTQ_SPARSITY = {".*ip1/kernel": 0.5}


def ttq(small: bool = False, epochs: int = 10, out: str = "runs/quantizers",
        finetune_lr: float = 1e-3, t: float = 0.05, l2: float = 5e-4,
        sparsity: dict | None = None, prune_epochs: int = 3) -> list[dict]:
    """Float LeNet-5 vs pruned + TTQ LeNet-5 (conv2 and ip1 ternary, first and last float).

    The float net is pruned once by magnitude (``sparsity``, per layer) and
    retrained with the masks for ``prune_epochs`` (Han's retraining: Adam,
    cosine from 1e-3, L2 ``l2``); then TTQ fine-tunes it with the masks for
    ``epochs`` epochs (Adam, cosine from ``finetune_lr``, L2 ``l2`` on the
    latent weights, threshold factor ``t``). The file stores the ternary
    layers as entropy-coded gaps and signs, so a pruned zero costs a fraction
    of a bit.
    """
    train_data, test_data = _data(small)
    epochs = 1 if small else epochs
    sparsity = TTQ_SPARSITY if sparsity is None else sparsity
    model, dense, float_accuracy = _float_lenet5(train_data, test_data,
                                                 None if small else out)
    skip = order.first_and_last(model, dense, PREP(train_data[0][:1]))
    masks = pruning.sparsity_masks(dense["params"], 0.0, overrides=sparsity)
    steps_per_epoch = data.num_batches(train_data[0].shape[0], 128, "drop")
    pruned = {"params": pruning.apply_masks(dense["params"], masks)}
    pruned_accuracy = _accuracy(model, pruned, test_data)
    if prune_epochs and not small:
        retrain = optax.chain(optax.add_decayed_weights(l2), optax.adam(
            optax.cosine_decay_schedule(1e-3, prune_epochs * steps_per_epoch)))
        pruned = train.fit(model, pruning.prune(retrain, masks), train_data, epochs=prune_epochs,
                           preprocess=PREP, variables=pruned, progress=False).variables
    retrained_accuracy = _accuracy(model, pruned, test_data)
    latent = {"params": ternary.init(pruned["params"], t, skip=skip, masks=masks)}
    steps = epochs * steps_per_epoch
    adam = optax.adam(optax.cosine_decay_schedule(finetune_lr, steps))
    decay = optax.add_decayed_weights(l2, mask=lambda lat: {  # the latent weights, not the scales
        "params": jax.tree.map(lambda _: True, lat["params"]),
        "scales": jax.tree.map(lambda _: False, lat["scales"])})
    ternarize = functools.partial(ternary.ternarize, t=t, masks=masks)
    t0 = time.perf_counter()
    tuned = train.fit(model, optax.chain(decay, adam) if l2 else adam, train_data, epochs=epochs,
                      preprocess=PREP, variables=latent, transform=ternarize,
                      progress=False).variables
    seconds = time.perf_counter() - t0
    stored = {"params": ternary.compressed(tuned["params"], t, masks)}
    row = _from_file(model, stored, os.path.join(out, "ttq_lenet5.zyl"), test_data)
    kept = {k: round(v, 3) for k, v in pruning.kept_fraction(masks).items() if "kernel" in k}
    return [{"model": "float LeNet-5", "test_accuracy": float_accuracy},
            {"model": "pruned float LeNet-5 (before / after retraining)",
             "test_accuracy": retrained_accuracy, "before_retraining": pruned_accuracy,
             "retrain_epochs": prune_epochs},
            {"model": f"pruned + TTQ LeNet-5 ({', '.join(sorted(tuned['params']['scales']))} "
                      f"ternary; {', '.join(skip)} float)",
             "test_accuracy": row["file_accuracy"], "drop": float_accuracy - row["file_accuracy"],
             "seconds": seconds, "kept": kept, "lr": finetune_lr, "t": t, "l2": l2,
             "scales": {k: {s: float(v) for s, v in d.items()}
                        for k, d in tuned["params"]["scales"].items()}, **row}]


def pattern_binarization(small: bool = False, finetune_epochs: int = 5,
                         out: str = "runs/quantizers", finetune_lr: float = 1e-3):
    """Float LeNet-5, then both 5x5 convs pattern-binarized and fine-tuned (alpha + dense) -> file."""
    train_data, test_data = _data(small)
    finetune_epochs = 1 if small else finetune_epochs
    model, dense, float_accuracy = _float_lenet5(train_data, test_data, None if small else out)
    latent, patterns = pattern.binarize_patterns(dense["params"])
    before = _accuracy(model, {"params": pattern.apply(latent, patterns)}, test_data)
    n = train_data[0].shape[0]
    t0 = time.perf_counter()
    ft = optax.adam(optax.cosine_decay_schedule(finetune_lr, finetune_epochs * (n // 128)))
    tuned = train.fit(model, ft, train_data, epochs=finetune_epochs, preprocess=PREP,
                      variables={"params": latent}, transform=pattern.apply, aux=patterns,
                      progress=False).variables
    stored = {"params": pattern.compressed(tuned["params"], patterns)}
    row = _from_file(model, stored, os.path.join(out, "pattern_lenet5.zyl"), test_data)
    return [{"model": "float LeNet-5", "test_accuracy": float_accuracy},
            {"model": "pattern-binarized LeNet-5, before fine-tuning", "test_accuracy": before},
            {"model": f"pattern-binarized LeNet-5, fine-tuned {finetune_epochs} epochs at lr "
                      f"{finetune_lr:g}", "test_accuracy": row["file_accuracy"],
             "seconds": time.perf_counter() - t0, **row}]


PARTS = {"bnn": bnn, "ttq": ttq, "pattern": pattern_binarization}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=sorted(PARTS))
    parser.add_argument("--small", action="store_true", help="6,000 images, 1 epoch")
    parser.add_argument("--out", default="runs/quantizers")
    parser.add_argument("--ttq-lr", type=float, default=1e-3, help="TTQ fine-tuning peak lr")
    parser.add_argument("--ttq-t", type=float, default=0.05, help="TTQ threshold factor t")
    parser.add_argument("--ttq-l2", type=float, default=5e-4, help="L2 on TTQ latent weights")
    parser.add_argument("--ttq-sparsity", type=json.loads, default=None,
                        help=f"JSON {{regex: sparsity}} pruned before TTQ (default {TTQ_SPARSITY})")
    parser.add_argument("--ttq-prune-epochs", type=int, default=3,
                        help="epochs of float retraining with the masks before TTQ")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for part in args.parts:
        extra = ({"finetune_lr": args.ttq_lr, "t": args.ttq_t, "l2": args.ttq_l2,
                  "sparsity": args.ttq_sparsity, "prune_epochs": args.ttq_prune_epochs}
                 if part == "ttq" else {})
        rows = PARTS[part](small=args.small, out=args.out, **extra)
        for row in rows:
            print(f"{part:8s} {row['model']:48s} {100 * row['test_accuracy']:.2f}%  "
                  + "  ".join(f"{k}={v}" for k, v in row.items()
                              if k not in ("model", "test_accuracy", "scales")), flush=True)
        archive.write_atomic(os.path.join(args.out, f"{part}.json"),
                             json.dumps(rows, indent=1, default=float).encode())


if __name__ == "__main__":
    main()
