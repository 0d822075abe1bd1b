"""Binary inference: bit-packed XNOR-popcount layers vs float32 XLA.

Run: python -m benchmarks.binary_inference
Dense: ``sign(x) @ sign(W)`` through ``zylax.binary_ops.xnor_matmul`` (weights
packed once; activations packed inside the timed call) vs ``jnp.dot`` in
float32, at batch 1 and 256, sizes 1024 and 4096. Conv 3x3 (same padding,
56x56x256 -> 256 at batch 1, 14x14x1024 -> 1024 at batch 1): activations
packed along channels, 3x3 patches of words, ``xnor_matmul``, vs
``lax.conv_general_dilated`` in float32. Results are
checked equal to the float computation on +-1 inputs.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import measure, print_table
from zylax.binary_ops import pack_signs, xnor_matmul


def _signs(key, shape):
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(jnp.float32)


def dense_rows(sizes=(1024, 4096), batches=(1, 256), repeats: int = 21):
    rows = []
    for k in sizes:
        for m in batches:
            x = _signs(jax.random.key(0), (m, k))
            w = _signs(jax.random.key(1), (k, k))
            packed_w = pack_signs(w.T)
            float_fn = jax.jit(lambda a, b: jnp.dot(a, b))
            binary_fn = jax.jit(lambda a, pw: xnor_matmul(pack_signs(a), pw, k=k))
            np.testing.assert_array_equal(np.asarray(binary_fn(x, packed_w)),
                                          np.asarray(float_fn(x, w)).astype(np.int32))
            t_float = measure(lambda: float_fn(x, w), repeats=repeats)
            t_binary = measure(lambda: binary_fn(x, packed_w), repeats=repeats)
            rows.append({"layer": f"dense {m}x{k}x{k}", "float": t_float, "binary": t_binary,
                         "memory_ratio": w.nbytes / packed_w.nbytes})
    return rows


def _im2col(x, kernel=3, pad_value=1.0):
    """3x3 'same' patches of (N, H, W, C), padded with ``pad_value``: (N*H*W, 9*C)."""
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    taps = [padded[:, i:i + h, j:j + w, :] for i in range(kernel) for j in range(kernel)]
    return jnp.concatenate(taps, axis=-1).reshape(n * h * w, kernel * kernel * c)


def packed_patches(x):
    """Packs activations along channels first, then gathers the 3x3 patches of words.

    Equal to ``pack_signs(_im2col(x))`` (C is a multiple of 32, so words never
    straddle taps; padding +1 is the all-ones word) but touches 32x less data.
    """
    return _im2col(pack_signs(x), pad_value=jnp.uint32(0xFFFFFFFF))


def conv_rows(shapes=((1, 56, 256), (1, 14, 1024)), repeats: int = 11):
    rows = []
    for n, size, c in shapes:
        x = _signs(jax.random.key(2), (n, size, size, c))
        w = _signs(jax.random.key(3), (3, 3, c, c))
        k = 9 * c
        packed_w = pack_signs(w.reshape(k, c).T)
        float_fn = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
            jnp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0), b, (1, 1),
            "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        binary_fn = jax.jit(lambda a, pw: xnor_matmul(packed_patches(a), pw, k=k).reshape(
            n, size, size, c))
        np.testing.assert_array_equal(np.asarray(binary_fn(x, packed_w)),
                                      np.asarray(float_fn(x, w)).astype(np.int32))
        rows.append({"layer": f"conv3x3 {n}x{size}x{size}x{c}->{c}",
                     "float": measure(lambda: float_fn(x, w), repeats=repeats),
                     "binary": measure(lambda: binary_fn(x, packed_w), repeats=repeats),
                     "memory_ratio": w.nbytes / packed_w.nbytes})
    return rows


def profile_conv(n: int = 1, size: int = 56, c: int = 256, repeats: int = 11) -> dict:
    """Splits the binary 3x3 conv into im2col + packing and the XNOR-popcount product."""
    x = _signs(jax.random.key(2), (n, size, size, c))
    w = _signs(jax.random.key(3), (3, 3, c, c))
    k = 9 * c
    packed_w = pack_signs(w.reshape(k, c).T)
    im2col_then_pack = jax.jit(lambda a: pack_signs(_im2col(a)))
    pack_then_im2col = jax.jit(packed_patches)
    packed_x = pack_then_im2col(x)
    np.testing.assert_array_equal(np.asarray(packed_x), np.asarray(im2col_then_pack(x)))
    product = jax.jit(lambda px, pw: xnor_matmul(px, pw, k=k))
    timings = {"im2col of floats, then pack": measure(lambda: im2col_then_pack(x),
                                                      repeats=repeats),
               "pack, then im2col of words (used)": measure(lambda: pack_then_im2col(x),
                                                            repeats=repeats),
               "xnor_matmul": measure(lambda: product(packed_x, packed_w), repeats=repeats)}
    print_table(f"Profile of the binary conv3x3 {n}x{size}x{size}x{c}->{c}", ["part", "time"],
                [[name, str(t)] for name, t in timings.items()])
    return timings


def run(repeats: int = 21, small: bool = False) -> list[dict]:
    rows = dense_rows((1024,) if small else (1024, 4096), (1, 256), repeats)
    rows += conv_rows(((1, 8, 256),) if small else ((1, 56, 256), (1, 14, 1024)),
                      max(3, repeats // 2))
    print_table("Binary inference: XNOR-popcount (pure XLA) vs float32",
                ["layer", "float32", "binary packed", "speed-up", "weight memory"],
                [[r["layer"], str(r["float"]), str(r["binary"]),
                  f"{r['float'].median / r['binary'].median:.2f}x",
                  f"{r['memory_ratio']:.0f}x smaller"] for r in rows])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--profile", action="store_true", help="only the conv profile")
    args = parser.parse_args()
    if args.profile:
        profile_conv()
    else:
        run(args.repeats)


if __name__ == "__main__":
    main()
