"""zylax k-means vs scikit-learn KMeans on the same 1-D weights, same linear init.

Run: python -m benchmarks.kmeans [--sizes 1000000 10000000] [--bits 5 8]
Both run Lloyd's algorithm from the same linearly spaced centroids until no
centroid moves: scikit-learn for at most its default 300 iterations, zylax for
at most 10000 (an iteration costs O(k log n) on sorted prefix sums, so the cap
is cheap; both relocate empty clusters). Inertia is recomputed in float64.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import measure, print_table
from zylax.transforms import sharing


def inertia(values: np.ndarray, centroids: np.ndarray) -> float:
    """Within-cluster sum of squares of 1-D ``values`` at their nearest centroid (float64)."""
    c = np.sort(np.asarray(centroids, np.float64))
    idx = np.searchsorted((c[1:] + c[:-1]) / 2, values)
    return float(np.sum((values.astype(np.float64) - c[idx]) ** 2))


def run(sizes=(1_000_000, 10_000_000), bits_list=(5, 8), repeats: int = 3,
        max_iter: int = 300, ours_max_iter: int = 10000) -> list[dict]:
    from sklearn.cluster import KMeans

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        w = rng.laplace(0, 0.05, n).astype(np.float32)  # pruned-layer-like heavy tails
        for bits in bits_list:
            k = 2 ** bits
            init = np.linspace(w.min(), w.max(), k, dtype=np.float32)
            ours = lambda: sharing.kmeans(w, bits, max_iters=ours_max_iter).codebook  # noqa: E731
            sk = KMeans(n_clusters=k, init=init.reshape(-1, 1), n_init=1, max_iter=max_iter,
                        tol=0.0, algorithm="lloyd")
            t_ours = measure(ours, repeats=repeats, warmup=1)
            t_sk = measure(lambda: sk.fit(w.reshape(-1, 1)), repeats=max(1, repeats // 2),
                           warmup=0)
            ratio_inertia = inertia(w, np.asarray(ours())) / inertia(w, sk.cluster_centers_[:, 0])
            rows.append({"n": n, "bits": bits, "ours": t_ours, "sklearn": t_sk,
                         "speedup": t_sk.median / t_ours.median, "inertia_ratio": ratio_inertia})
    print_table("k-means: zylax vs sklearn (same linear init, Lloyd to convergence)",
                ["weights", "bits", "zylax", "sklearn", "speed-up", "inertia ratio"],
                [[f"{r['n']:,}", str(r["bits"]), str(r["ours"]), str(r["sklearn"]),
                  f"{r['speedup']:.1f}x", f"{r['inertia_ratio']:.6f}"] for r in rows])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run(args.sizes, args.bits, args.repeats)


if __name__ == "__main__":
    main()
