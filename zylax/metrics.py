"""Detection and segmentation metrics.

* Detection: COCO box AP, computed only by ``pycocotools.cocoeval.COCOeval``
  against ``zylax.scenes.coco_ground_truth`` (imported lazily, so ``import
  zylax`` stays light).
* Segmentation: a jittable confusion matrix (rows = true class, columns =
  predicted class) and the mean IoU and pixel accuracy read from it. Sum
  the confusion matrices of several batches to evaluate a whole split.
"""

from __future__ import annotations

import contextlib
import io

import jax.numpy as jnp
import numpy as np

from zylax import scenes

COCO_STATS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
"""Names of ``COCOeval.stats`` in order; ``mAP`` is AP averaged over IoU 0.50:0.05:0.95."""


def coco_detection_metrics(targets: dict, detections: dict) -> dict[str, float]:
    """COCO box metrics of ``detections`` on the scenes described by ``targets``.

    Args:
      targets: ``zylax.scenes.generate``'s targets (N scenes).
      detections: fixed-size arrays over the same N scenes: ``"boxes"`` float
        ``(N, D, 4)`` ``(x0, y0, x1, y1)`` in pixels (exclusive ends, as the
        targets), ``"scores"`` ``(N, D)``, ``"classes"`` int ``(N, D)`` in
        0..9, ``"valid"`` bool ``(N, D)``. COCOeval keeps the 100
        best-scoring detections of each image.

    Returns:
      ``{name: float for name in COCO_STATS}``, pycocotools' numbers (its
      printing silenced). -1.0 is pycocotools' "no ground truth in this area
      range". With no valid detection at all, COCOeval runs on an empty
      result set (0.0 wherever there is ground truth).
    """
    from pycocotools.cocoeval import COCOeval  # only when detections are scored

    ground_truth = scenes.load_coco(scenes.coco_ground_truth(targets))
    results = detection_results(detections, ground_truth.getImgIds())
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground_truth, _results(ground_truth, results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(COCO_STATS, evaluation.stats)}


def detection_results(detections: dict, image_ids) -> list[dict]:
    """COCO result entries (``image_id``, ``category_id`` = class + 1, ``bbox`` xywh, ``score``).

    ``detections`` as in ``coco_detection_metrics``; ``image_ids`` names the N
    scenes in order. Only valid detections become entries.
    """
    boxes = np.asarray(detections["boxes"], np.float64)
    scores = np.asarray(detections["scores"], np.float64)
    classes = np.asarray(detections["classes"])
    valid = np.asarray(detections["valid"], bool)
    if boxes.shape != valid.shape + (4,) or not scores.shape == classes.shape == valid.shape:
        raise ValueError(f"detections need boxes (N, D, 4) and scores, classes, valid (N, D); got "
                         f"{boxes.shape}, {scores.shape}, {classes.shape}, {valid.shape}")
    if valid.shape[0] != len(image_ids):
        raise ValueError(f"detections cover {valid.shape[0]} scenes, the targets {len(image_ids)}")
    scene, slot = np.nonzero(valid)
    xyxy = boxes[scene, slot]
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return [{"image_id": int(image_ids[s]), "category_id": int(c) + 1,
             "bbox": [float(v) for v in box], "score": float(p)}
            for s, c, box, p in zip(scene, classes[scene, slot], xywh, scores[scene, slot])]


def _results(ground_truth, results: list[dict]):
    """The detections as a COCO index; an empty one when there are none (``loadRes`` can't)."""
    if results:
        return ground_truth.loadRes(results)
    return scenes.load_coco({"images": ground_truth.dataset["images"], "annotations": [],
                             "categories": ground_truth.dataset["categories"]})


def confusion_matrix(predictions, labels, num_classes: int, mask=None) -> jnp.ndarray:
    """Counts of (true class, predicted class) pairs; jittable with ``num_classes`` static.

    Args:
      predictions, labels: int arrays of the same shape (e.g. ``(B, H, W)``).
      num_classes: C (11 for the scenes: background + 10 classes).
      mask: optional bool array of the same shape; False entries are not
        counted. Entries whose label or prediction is outside ``[0, C)`` (an
        "ignore" label such as 255) are not counted either.

    Returns:
      int32 ``(C, C)``: entry ``[t, p]`` counts pixels of true class ``t``
      predicted as ``p``.
    """
    predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
    counted = ((labels >= 0) & (labels < num_classes)
               & (predictions >= 0) & (predictions < num_classes))
    if mask is not None:
        counted = counted & jnp.asarray(mask, bool)
    pairs = jnp.where(counted, labels * num_classes + predictions, 0).ravel()
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[pairs].add(
        counted.ravel().astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def class_iou(confusion) -> jnp.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)`` of a ``(C, C)`` confusion; NaN where the union is 0."""
    confusion = jnp.asarray(confusion, jnp.float32)
    true_positive = jnp.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return jnp.where(union > 0, true_positive / jnp.where(union > 0, union, 1), jnp.nan)


def mean_iou(confusion) -> jnp.ndarray:
    """Mean of ``class_iou`` over the classes present in the truth or the predictions.

    A class absent from both (union 0) has no defined IoU and is left out of
    the mean rather than counted as 0 or 1; on the scenes' test split all 11
    classes (background + 10) are present, so this is the mean over 11.
    NaN when nothing was counted.
    """
    return jnp.nanmean(class_iou(confusion))


def pixel_accuracy(confusion) -> jnp.ndarray:
    """Fraction of counted pixels predicted correctly: ``trace / sum`` (NaN when empty)."""
    confusion = jnp.asarray(confusion, jnp.float32)
    return jnp.trace(confusion) / confusion.sum()
