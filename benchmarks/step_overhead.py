"""Cost of compression inside a jitted training step, vs the plain Flax step.

Run: python -m benchmarks.step_overhead [--batch 128]
For LeNet-300-100 and MobileNet V2 (width 1.0, 32x32 input, TapConv) it times
three jitted steps on the same batch, round-robin (``measure_interleaved``):
  plain      optax.adam on dense params;
  prune      the ``prune`` optax wrapper around adam (masks in the optimizer
             state) with the masked params as the model's params;
  shared     the weight-shared model: forward ``append(codebook, 0)[indices]``
             (pruned positions index the zero), the centroid gradient by autodiff,
             ``centroid_only(adam)``, all inside the ``prune`` wrapper's state.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from benchmarks.common import measure_interleaved, print_table, train_stepper
from zylax import data, nets, train
from zylax.nets.layers import TapConv
from zylax.transforms import pruning, sharing


def run(batch_size: int = 128, repeats: int = 21) -> list[dict]:
    images, labels = data.load("fashion_mnist", "train")
    rows = []
    for label, model, pad in (("LeNet-300-100", nets.LeNet300100(), None),
                              ("MobileNet V2 1.0 @32", nets.MobileNetV2(num_classes=10,
                                                                        conv=TapConv), 32)):
        batch = next(data.batches(images, labels, batch_size,
                                  preprocess=data.preprocessing("fashion_mnist", pad)))
        variables = train.init_variables(model, batch["image"][:1], 0)
        params = variables["params"]
        masks = pruning.sparsity_masks(params, 0.9)
        pruned = pruning.apply_masks(params, masks)
        latent, aux = sharing.share(pruned, 5, masks)
        latent_masks = jax.tree.map(lambda leaf: np.ones(np.shape(leaf), bool), latent)
        shared_tx = pruning.prune(sharing.centroid_only(optax.adam(1e-3), latent, aux),
                                  latent_masks)
        timings = measure_interleaved({
            "plain": train_stepper(model, optax.adam(1e-3), batch, variables=variables),
            "prune": train_stepper(model, pruning.prune(optax.adam(1e-3), masks), batch,
                                   variables={**variables, "params": pruned}),
            "shared": train_stepper(model, shared_tx, batch,
                                    variables={**variables, "params": latent},
                                    transform=sharing.decode, aux=aux)}, repeats=repeats)
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
