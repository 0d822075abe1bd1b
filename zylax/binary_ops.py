"""Binary (XNOR-popcount) matrix products on bit-packed operands, in plain XLA.

For ``x`` in {-1, +1}^(M, K) and ``w`` in {-1, +1}^(K, N), with both packed
along K into uint32 words (bit 1 = +1), ``x @ w = K - 2 * popcount(x XOR w)``
summed over words (Courbariaux et al. 2016, section 5). ``xnor_matmul`` scans
over chunks of 8 words: each chunk is a broadcast XOR + popcount over
``(M, N, 8)``, small enough to stay in cache, which is the fastest pure-XLA
formulation measured on the project's CPU (shared/research/binary-kernels.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

WORD = 32
CHUNK = 8


def pack_signs(x: jax.Array) -> jax.Array:
    """Packs ``sign(x)`` along the last axis into uint32 words: (..., K) -> (..., K/32).

    ``x >= 0`` is bit 1. K must be a multiple of 32 * 8 (pad with +1 and
    correct by the padding otherwise).
    """
    bits = (x >= 0).astype(jnp.uint32).reshape(*x.shape[:-1], x.shape[-1] // WORD, WORD)
    return jnp.sum(bits << jnp.arange(WORD, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


@functools.partial(jax.jit, static_argnames=("k",))
def xnor_matmul(packed_x: jax.Array, packed_w: jax.Array, k: int) -> jax.Array:
    """``sign(x) @ sign(w)`` from packed rows: (M, K/32) x (N, K/32) -> int32 (M, N).

    ``packed_w`` holds the columns of ``w`` as rows (``pack_signs(w.T)``).
    """
    words = packed_x.shape[-1]
    if words % CHUNK:
        raise ValueError(f"K/32 = {words} must be a multiple of {CHUNK}")
    xs = packed_x.reshape(packed_x.shape[0], words // CHUNK, CHUNK).transpose(1, 0, 2)
    ws = packed_w.reshape(packed_w.shape[0], words // CHUNK, CHUNK).transpose(1, 0, 2)

    def body(acc, chunk):
        xc, wc = chunk
        diff = jax.lax.population_count(xc[:, None, :] ^ wc[None, :, :])
        return acc + jnp.sum(diff, axis=-1, dtype=jnp.int32), None

    mismatches, _ = jax.lax.scan(body, jnp.zeros((packed_x.shape[0], packed_w.shape[0]),
                                                 jnp.int32), (xs, ws))
    return k - 2 * mismatches
