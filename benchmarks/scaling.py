"""How k-means and Huffman time grow with the number of weights (1e5 .. 1e7).

Run: python -m benchmarks.scaling
Prints the times and the log-log slope between consecutive sizes (1.0 = linear).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import measure, print_table
from zylax.coding import huffman
from zylax.transforms import sharing


def run(sizes=(100_000, 1_000_000, 10_000_000), repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    times = {"k-means 5 bits (50 iters)": [], "huffman encode": [], "huffman decode": []}
    for n in sizes:
        w = rng.laplace(0, 0.05, n).astype(np.float32)
        times["k-means 5 bits (50 iters)"].append(measure(
            lambda: sharing.kmeans(w, 5, max_iters=50, tol=-1.0).codebook, repeats=repeats))
        symbols = np.minimum(rng.geometric(0.2, n) - 1, 255)
        blob = huffman.encode(symbols)
        times["huffman encode"].append(measure(lambda: huffman.encode(symbols), repeats=repeats))
        times["huffman decode"].append(measure(lambda: huffman.decode(blob), repeats=repeats))
    rows = []
    for label, ts in times.items():
        slopes = [math.log(b.median / a.median) / math.log(nb / na)
                  for a, b, na, nb in zip(ts, ts[1:], sizes, sizes[1:])]
        rows.append([label] + [str(t) for t in ts] + [", ".join(f"{s:.2f}" for s in slopes)])
    print_table("Scaling with the number of weights", ["operation"] + [f"{n:,}" for n in sizes]
                + ["log-log slopes"], rows)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    args = parser.parse_args()
    run(tuple(args.sizes))


if __name__ == "__main__":
    main()
