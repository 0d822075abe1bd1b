"""Sparse variational dropout (``methods.sparse_vd``, Molchanov et al. 2017) on LeNet-300-100
(or ``--net lenet5``), then a float retraining of the kept weights (``prune`` at sparsity 0:
the zeros kept) and one epoch of k-means codebook retraining (``share``, ANS-coded masks):
the figures behind RESULTS.md "Sparse variational dropout".

Run:
  python -m experiments.variational_dropout --out runs/variational_dropout

The registry's baseline of ``--net`` (cached under ``runs/`` as ``zylax compress --net NET``
caches it) trains ``--epochs`` epochs under the KL term at each ``--kl-weight``,
at a fixed Adam rate of 1e-3 and batches of 256, then ``--retrain-epochs`` of the kept weights
and one epoch of ``--bits``-bit codebooks (default Han's: 8 bits for convolutions, 5 for
dense layers), the biases cast to 16 bits in that epoch with ``--biases float16``; each file
is written, read back and scored on all 10,000 test images. Prints one Markdown row per file
and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse

from zylax import methods
from experiments.soft_sharing import sweep


def chain(epochs: int, kl_weight: float, retrain_epochs: int, bits: int | None,
          biases: str | None = None) -> list:
    """``sparse_vd`` for ``epochs``, the kept weights retrained, then ``share`` (with the
    biases cast to ``biases``, e.g. ``"float16"``, when given)."""
    stages = [methods.sparse_vd(epochs=epochs, kl_weight=kl_weight)]
    if retrain_epochs:
        stages.append(methods.prune(sparsity=0.0, epochs=retrain_epochs))
    last = methods.share(bits=bits, epochs=1, index_bits="ans")
    if biases is not None:
        last = methods.combine(last, methods.cast(dtype=biases, epochs=1))
    return [*stages, last]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/variational_dropout")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--kl-weight", type=float, nargs="+", default=[1.0, 1.5, 3.0])
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--net", choices=["lenet300", "lenet5"], default="lenet300")
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--biases", choices=["float16", "bfloat16"], default=None,
                        help="store the biases at 16 bits (default: float32)")
    args = parser.parse_args()
    suffix = f"-e{args.epochs}" + (f"-{args.biases}" if args.biases else "")
    sweep(args.out, [({"kl_weight": kl_weight, "epochs": args.epochs,
                       "retrain_epochs": args.retrain_epochs,
                       **({"bits": args.bits} if args.bits is not None else {})},
                      chain(args.epochs, kl_weight, args.retrain_epochs, args.bits, args.biases),
                      f"{args.net}-kl{kl_weight:g}{suffix}.zyl") for kl_weight in args.kl_weight],
          args.net)


if __name__ == "__main__":
    main()
