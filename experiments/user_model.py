"""A model zylax did not define, compressed with ``compress.run``'s defaults and the README's
chains: the figures behind RESULTS.md "Defaults on a user's model" and "Retraining learning
rate".

Run:
  python -m experiments.user_model --out runs/user_model

The model is the README's ``MyNet`` (its own layer names, BatchNorm, a
``training`` flag), trained by its own optax loop (Adam 1e-3, batch 100, 2
epochs) on the first 6,000 Fashion-MNIST training images, as in the README.
Each chain then runs through ``compress.run`` with no settings but the
chain: the retraining rate is chosen by the held-out sweep, every score is
measured on the model decoded from the written file, on all 10,000 test
images. Prints one Markdown row per chain and writes ``<out>/<chain>.zyl``
and ``<out>/results.json`` (the reports, sweeps included).
"""

from __future__ import annotations

import argparse
import json
import os

import flax.linen as nn
import jax
import optax

from zylax import compress, data, methods

CHAINS = {
    "defaults": None,
    "prune 0.6 + share 5": lambda: [methods.prune(sparsity=0.6), methods.share(bits=5)],
    "README deep: prune 0.8 (2 epochs) + share 5":
        lambda: [methods.prune(sparsity=0.8, epochs=2), methods.share(bits=5)],
    "README ttq: prune 0.5 + ternary": lambda: [methods.prune(sparsity=0.5), methods.ternary()],
    "README bnn: binary": lambda: [methods.binary()],
}
"""The chains compared (None: ``compress.default_methods()``)."""


class MyNet(nn.Module):
    """The README's model: its own layer names, BatchNorm, a ``training`` flag."""

    @nn.compact
    def __call__(self, x, training: bool = False):
        x = nn.Conv(16, (3, 3), strides=2, name="features")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2, name="block")(x))
        x = nn.relu(nn.Dense(128, name="hidden")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="classifier")(x)


def train_own_loop(model, variables, images, labels, prep, epochs: int = 2):
    """The README's optax loop: Adam 1e-3, batches of 100 in order, BatchNorm updated."""
    tx = optax.adam(1e-3)

    @jax.jit
    def step(variables, opt_state, x, y):
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, x, training=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates
        grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
        grads, opt_state = tx.update(grads, opt_state)
        return {**updates, "params": optax.apply_updates(variables["params"], grads)}, opt_state

    opt_state = tx.init(variables["params"])
    for _ in range(epochs):
        for i in range(0, len(images), 100):
            variables, opt_state = step(variables, opt_state, prep(images[i:i + 100]),
                                        labels[i:i + 100])
    return variables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/user_model")
    parser.add_argument("--train-examples", type=int, default=6000)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    images, labels = data.load("fashion_mnist", "train")
    images, labels = images[:args.train_examples], labels[:args.train_examples]
    test = data.load("fashion_mnist", "test")
    prep = data.Preprocess.fit(images)
    model = MyNet()
    variables = train_own_loop(model, model.init(jax.random.key(0), prep(images[:1])),
                               images, labels, prep)
    reports = {}
    print("| chain | dense | from the file | drop | file | ratio | rate chosen | swept |")
    print("|---|---|---|---|---|---|---|---|")
    for name, chain in CHAINS.items():
        out = os.path.join(args.out, name.split(":")[0].replace(" ", "_") + ".zyl")
        result = compress.run(model, variables, (images, labels), test,
                              None if chain is None else chain(), out=out, preprocess=prep,
                              progress=False)
        rep = reports[name] = result.report
        swept = ", ".join(f"{float(r):g}: {loss:.3f}"
                          for r, loss in sorted(rep["learning_rate_sweep"].items(),
                                                key=lambda kv: float(kv[0])))
        print(f"| {name} | {100 * rep['dense_accuracy']:.2f}% | "
              f"{100 * rep['compressed_accuracy']:.2f}% | "
              f"{100 * (rep['dense_accuracy'] - rep['compressed_accuracy']):.2f} | "
              f"{rep['file_bytes']:,} B | {rep['ratio']:.1f}x | {rep['learning_rate']:g} | "
              f"{swept} |", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(reports, f, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
