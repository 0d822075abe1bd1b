"""Where the weight-shared LeNet-300-100 step spends its extra time.

Run: python -m benchmarks.profile_shared_step
Times, on the same LeNet-300-100 parameters (90% pruned, 5-bit codebooks):
the decode alone (gather of 266,200 weights), its backward pass (scatter-add
into the codebooks), the model's forward + backward on a batch of 128, and
Adam on the dense params vs on the codebooks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import measure_interleaved, print_table
from zylax import data, methods, nets, train


def main() -> None:
    images, labels = data.load("fashion_mnist", "train")
    batch = next(data.batches(images, labels, 128,
                              preprocess=data.preprocessing("fashion_mnist")))
    model = nets.LeNet300100()
    params = train.init_variables(model, batch["image"][:1], 0)["params"]
    key = jax.random.key(0)
    prune, share = methods.prune(sparsity=0.9), methods.share(bits=5)
    state = share.init(prune.apply(prune.init(params, key)), key)
    latent, aux = state["latent"], state["aux"]
    x, y, m = (jnp.asarray(batch[k]) for k in ("image", "label", "mask"))

    def loss(p):
        return train.cross_entropy(model.apply({"params": p}, x), y, m)

    def decoded(lat):
        return share.apply({"latent": lat, "aux": aux})

    decode = jax.jit(decoded)
    decode_vjp = jax.jit(lambda lat, g: jax.vjp(decoded, lat)[1](g)[0])
    dense_grad = jax.jit(jax.grad(loss))
    shared_grad = jax.jit(jax.grad(lambda lat: loss(decoded(lat))))
    adam = optax.adam(1e-3)
    dense_state, latent_state = adam.init(params), adam.init(latent)
    adam_dense = jax.jit(lambda g: adam.update(g, dense_state, params)[0])
    adam_latent = jax.jit(lambda g: adam.update(g, latent_state, latent)[0])
    g_dense = dense_grad(params)
    g_latent = shared_grad(latent)
    t = measure_interleaved({
        "decode (gather)": lambda: decode(latent),
        "decode backward (scatter-add)": lambda: decode_vjp(latent, g_dense),
        "model grad, dense params": lambda: dense_grad(params),
        "model grad through decode": lambda: shared_grad(latent),
        "adam on 266,200 weights": lambda: adam_dense(g_dense),
        "adam on the codebooks": lambda: adam_latent(g_latent)}, repeats=51, warmup=5)
    print_table("Profile of the LeNet-300-100 shared step (batch 128)", ["part", "time"],
                [[name, str(timing)] for name, timing in t.items()])


if __name__ == "__main__":
    main()
