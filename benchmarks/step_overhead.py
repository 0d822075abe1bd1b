"""Cost of compression inside a jitted training step, vs the plain Flax step.

Run: python -m benchmarks.step_overhead [--batch 128]
For LeNet-300-100 and MobileNet V2 (width 1.0, 32x32 input, TapConv) it times
three jitted steps on the same batch, round-robin (``measure_interleaved``):
  plain      optax.adam on dense params;
  prune      ``methods.prune``'s transformation around adam (its kept-zero masks
             in the optimizer state) on the pruned params;
  shared     ``methods.share`` after pruning: forward ``append(codebook, 0)[indices]``
             (pruned positions index the zero), the centroid gradient by autodiff,
             its transformation of the codebooks and the float leaves.
"""

from __future__ import annotations

import argparse

import jax
import optax

from benchmarks.common import measure_interleaved, print_table, train_stepper
from zylax import data, methods, nets, train
from zylax.nets.layers import TapConv


def run(batch_size: int = 128, repeats: int = 21) -> list[dict]:
    images, labels = data.load("fashion_mnist", "train")
    rows = []
    for label, model, pad in (("LeNet-300-100", nets.LeNet300100(), None),
                              ("MobileNet V2 1.0 @32", nets.MobileNetV2(num_classes=10,
                                                                        conv=TapConv), 32)):
        batch = next(data.batches(images, labels, batch_size,
                                  preprocess=data.preprocessing("fashion_mnist", pad)))
        variables = train.init_variables(model, batch["image"][:1], 0)
        key = jax.random.key(0)
        prune, share = methods.prune(sparsity=0.9), methods.share(bits=5)
        pruned = prune.init(variables["params"], key)
        shared = share.init(prune.apply(pruned), key)

        def stepper(method, state):
            return train_stepper(model, method.tx(optax.adam(1e-3)), batch,
                                 variables={**variables, "params": state["latent"]},
                                 method=method, aux=state["aux"])
        timings = measure_interleaved({
            "plain": train_stepper(model, optax.adam(1e-3), batch, variables=variables),
            "prune": stepper(prune, pruned), "shared": stepper(share, shared)},
            repeats=repeats)
        rows.append({"net": label, **timings})
    print_table(f"Training-step overhead (batch {batch_size}, ratio to the plain Flax step)",
                ["net", "plain step", "prune wrapper", "ratio", "masks + codebook + wrapper",
                 "ratio"],
                [[r["net"], str(r["plain"]), str(r["prune"]),
                  f"{r['prune'].median / r['plain'].median:.3f}x", str(r["shared"]),
                  f"{r['shared'].median / r['plain'].median:.3f}x"] for r in rows])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    run(args.batch, args.repeats)


if __name__ == "__main__":
    main()
