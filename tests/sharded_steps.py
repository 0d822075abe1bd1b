"""Runs a few LeNet-300-100 steps on real data; used by test_train in a subprocess.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/sharded_steps.py OUT.npz
"""

import itertools
import sys

import jax
import numpy as np
import optax

from zylax import data, nets, train


def main(out: str) -> None:
    images, labels = data.load("fashion_mnist", "train")
    model = nets.LeNet300100()
    mesh = train.data_mesh()
    tx = optax.sgd(0.05, momentum=0.9)
    preprocess = data.preprocessing("fashion_mnist")
    state = train.replicate(train.create_state(model, tx, preprocess(images[:1])), mesh)
    step = train.make_train_step(model, tx, mesh=mesh)
    losses = []
    for batch in itertools.islice(data.batches(images, labels, 128, preprocess=preprocess,
                                                seed=0), 5):
        state, metrics = step(state, train.shard_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    np.savez(out, losses=np.asarray(losses), devices=len(jax.devices()),
             shards=len(state.params["ip1"]["kernel"].sharding.device_set), **flat)


if __name__ == "__main__":
    main(sys.argv[1])
