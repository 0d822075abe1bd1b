"""How much mIoU a segmentation net loses to the grid its logits live on.

Run:
  python -m experiments.resolution_ceiling --max-examples 2000

DeepLabV3 predicts on a grid ``output_stride`` times coarser than the image
and resizes its logits bilinearly to the input (``nets.DeepLabV3``). This
scores a stand-in that knows the truth on that grid: each cell's "logits"
are the log of the true label fractions in it (``+ 1e-3``), resized to the
image the way DeepLabV3 resizes (``jax.image.resize``, bilinear), then
argmax'd and scored on the test scenes' masks (``metrics.class_iou``). A
trained net can beat it on some labels, because its logits carry more than
fractions; it is an estimate of the resolution limit, not a bound.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from zylax import data, metrics
from experiments.class_iou import label_names


def cell_fraction_predictions(segmentation: np.ndarray, num_classes: int, cells: int
                              ) -> np.ndarray:
    """Labels ``(B, S, S)`` -> the stand-in's per-pixel predictions ``(B, S, S)``.

    The true label fractions of each of ``cells x cells`` cells (``S`` a
    multiple of ``cells``), logged, resized bilinearly to ``S x S``, argmax'd.
    """
    b, size, _ = segmentation.shape
    if size % cells:
        raise ValueError(f"cells={cells} does not divide the {size}-pixel side")
    side = size // cells
    onehot = jax.nn.one_hot(jnp.asarray(segmentation), num_classes)
    fractions = onehot.reshape(b, cells, side, cells, side, num_classes).mean((2, 4))
    logits = jax.image.resize(jnp.log(fractions + 1e-3), (b, size, size, num_classes),
                              "bilinear")
    return np.asarray(jnp.argmax(logits, -1))


def ceiling_iou(segmentation: np.ndarray, num_classes: int, cells: int) -> np.ndarray:
    """Per-label IoU ``(num_classes,)`` of ``cell_fraction_predictions`` against the labels."""
    predictions = cell_fraction_predictions(segmentation, num_classes, cells)
    confusion = metrics.confusion_matrix(predictions, segmentation, num_classes)
    return np.asarray(metrics.class_iou(confusion))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--cells", type=int, nargs="+", default=[6, 12, 24, 48],
                        help="logit grid sides (96 / output stride: 6 at OS 16, 12 at OS 8)")
    args = parser.parse_args()

    _, targets = data.load("fashion_mnist_scenes", "test")
    segmentation = targets["segmentation"][:args.max_examples].astype(np.int32)
    names = label_names(11)
    print(f"first {len(segmentation):,} test scenes\n")
    print("| logit grid | mIoU | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for cells in args.cells:
        iou = ceiling_iou(segmentation, 11, cells)
        print(f"| {cells}x{cells} | **{iou.mean():.3f}** | "
              + " | ".join(f"{v:.2f}" for v in iou) + " |")


if __name__ == "__main__":
    main()
