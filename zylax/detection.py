"""SSD box machinery: anchors, box coding, matching, the multibox loss and NMS.

Plus the per-pixel loss of the segmentation nets. Everything but the anchor
generator (numpy: anchors are constants of a model and an image size) is
pure ``jax.numpy`` with fixed shapes, so it runs under ``jax.jit``.

Conventions:

* Boxes are corners ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive (a box
  covers pixels ``x0 <= x < x1``), as ``zylax.scenes`` writes them. Targets
  and detections are in pixels of the network input; matching and coding
  work on boxes normalised by the image width and height (``x / W``), so an
  exclusive pixel end is simply the box's continuous right edge.
* Anchors are centre form ``(cx, cy, w, h)``, normalised the same way, shape
  ``(A, 4)``, ordered feature map by feature map, then row, column and
  anchor: the order in which ``SSDLite`` emits its predictions.
* Box deltas are ``(tx, ty, tw, th) = ((cx - acx) / aw / 0.1,
  (cy - acy) / ah / 0.1, log(w / aw) / 0.2, log(h / ah) / 0.2)``: the SSD
  "variances" (0.1, 0.1, 0.2, 0.2), i.e. the TF Object Detection API
  ``FasterRcnnBoxCoder`` with scale factors (10, 10, 5, 5), its (y, x) order
  turned to (x, y).

References: Liu et al. 2016, "SSD: Single Shot MultiBox Detector" (matching,
hard-negative mining, loss); Sandler et al. 2018, section 6.2 (SSDLite); the
TF Object Detection API (``multiple_grid_anchor_generator.py``,
``argmax_matcher.py``, ``faster_rcnn_box_coder.py``,
``ssdlite_mobilenet_v2_coco.config``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax.resizing import resize_dense

VARIANCES = (0.1, 0.1, 0.2, 0.2)
"""SSD box-coding variances of (tx, ty, tw, th): TF's scale factors (10, 10, 5, 5) inverted."""

_EPSILON = 1e-8  # added to widths and heights before dividing or taking logs, as TF's coder does


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnchorConfig:
    """SSD anchor settings: TF OD API ``ssd_anchor_generator`` (``create_ssd_anchors``).

    Layer ``i`` of ``n`` has scale ``s_i = min_scale + (max_scale - min_scale)
    * i / (n - 1)`` and one anchor per aspect ratio ``r`` (height ``s / sqrt(r)``,
    width ``s * sqrt(r)``), plus a ``interpolated_scale_aspect_ratio`` anchor
    of scale ``sqrt(s_i * s_{i+1})`` (``s_n = 1``). With
    ``reduce_boxes_in_lowest_layer`` the first layer has just
    ``(0.1, 1:1), (s_0, 2:1), (s_0, 1:2)``. Defaults: ``ssdlite_mobilenet_v2``.
    """

    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True

    def __post_init__(self):
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and "
                             f"{self.max_scale}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"aspect ratios must be positive, got {self.aspect_ratios}")

    def box_specs(self, num_layers: int) -> list[list[tuple[float, float]]]:
        """``(scale, aspect ratio)`` of every anchor of a location, per layer."""
        steps = max(num_layers - 1, 1)
        scales = [self.min_scale + (self.max_scale - self.min_scale) * i / steps
                  for i in range(num_layers)] + [1.0]
        specs = []
        for layer in range(num_layers):
            scale, following = scales[layer], scales[layer + 1]
            if layer == 0 and self.reduce_boxes_in_lowest_layer:
                specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
                continue
            layer_specs = [(scale, ratio) for ratio in self.aspect_ratios]
            if self.interpolated_scale_aspect_ratio > 0:
                layer_specs.append((float(np.sqrt(scale * following)),
                                    self.interpolated_scale_aspect_ratio))
            specs.append(layer_specs)
        return specs

    def anchors_per_location(self, num_layers: int) -> list[int]:
        """Number of anchors at each location of each of ``num_layers`` feature maps."""
        return [len(specs) for specs in self.box_specs(num_layers)]

    def anchors(self, feature_map_sizes: Sequence[int | Sequence[int]],
                image_size: int | Sequence[int] | None = None) -> np.ndarray:
        """All anchors, float32 ``(A, 4)`` as normalised ``(cx, cy, w, h)``.

        Args:
          feature_map_sizes: per map, ``(height, width)`` or one int for square maps.
          image_size: ``(H, W)`` (or an int); for non-square images TF scales
            the base anchor by ``min(H, W) / H`` and ``min(H, W) / W`` so
            anchors keep their aspect ratio in pixels. None: square.

        Centres sit at ``(j + 0.5) / width, (i + 0.5) / height`` of each map
        (TF's default strides and offsets); anchors are not clipped.
        """
        height, width = (1, 1) if image_size is None else _pair(image_size)
        base_h, base_w = min(height, width) / height, min(height, width) / width
        grids = []
        for (rows, cols), specs in zip(map(_pair, feature_map_sizes),
                                       self.box_specs(len(feature_map_sizes))):
            scales, ratios = np.asarray(specs, np.float64).T
            w = scales * np.sqrt(ratios) * base_w
            h = scales / np.sqrt(ratios) * base_h
            cy, cx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols,
                                 indexing="ij")
            grid = np.broadcast_arrays(cx[..., None], cy[..., None], w, h)
            grids.append(np.stack(grid, -1).reshape(-1, 4))
        return np.concatenate(grids).astype(np.float32)


def center_to_corners(boxes: jax.Array) -> jax.Array:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(x0, y0, x1, y1)``."""
    center, size = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([center - size / 2, center + size / 2], -1)


def corners_to_center(boxes: jax.Array) -> jax.Array:
    """``(..., 4)`` ``(x0, y0, x1, y1)`` -> ``(cx, cy, w, h)``."""
    low, high = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([(low + high) / 2, high - low], -1)


def _area(boxes: jax.Array) -> jax.Array:
    return jnp.prod(jnp.clip(boxes[..., 2:] - boxes[..., :2], 0), -1)


def iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pairwise intersection over union of corner boxes ``a (..., N, 4)``, ``b (..., M, 4)``.

    Returns ``(..., N, M)``; 0 where the union is empty (zero-size padding boxes).
    """
    a, b = a[..., :, None, :], b[..., None, :, :]
    low = jnp.maximum(a[..., :2], b[..., :2])
    high = jnp.minimum(a[..., 2:], b[..., 2:])
    inter = jnp.prod(jnp.clip(high - low, 0), -1)
    union = _area(a) + _area(b) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def encode(boxes: jax.Array, anchors: jax.Array,
           variances: Sequence[float] = VARIANCES) -> jax.Array:
    """Box deltas ``(..., 4)`` of corner boxes relative to ``(cx, cy, w, h)`` anchors.

    Both normalised; ``(tx, ty, tw, th)`` divided by ``variances`` (SSD, eq. 2;
    TF ``FasterRcnnBoxCoder`` with scale factors 10, 10, 5, 5).
    """
    box, anchor = corners_to_center(boxes), anchors
    anchor_size = anchor[..., 2:] + _EPSILON
    offset = (box[..., :2] - anchor[..., :2]) / anchor_size
    log_size = jnp.log((box[..., 2:] + _EPSILON) / anchor_size)
    return jnp.concatenate([offset, log_size], -1) / jnp.asarray(variances, jnp.float32)


def decode(deltas: jax.Array, anchors: jax.Array,
           variances: Sequence[float] = VARIANCES) -> jax.Array:
    """Corner boxes ``(..., 4)`` from deltas: the inverse of ``encode``."""
    deltas = deltas * jnp.asarray(variances, jnp.float32)
    anchor_size = anchors[..., 2:] + _EPSILON
    center = deltas[..., :2] * anchor_size + anchors[..., :2]
    size = jnp.exp(deltas[..., 2:]) * anchor_size - _EPSILON
    return center_to_corners(jnp.concatenate([center, size], -1))


def match(gt_boxes: jax.Array, gt_classes: jax.Array, gt_valid: jax.Array, anchors: jax.Array,
          threshold: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """SSD matching of one image's objects to the anchors (TF ``ArgMaxMatcher``).

    Every anchor takes the object it overlaps most if that IoU is at least
    ``threshold``; then every valid object claims its best anchor whatever
    the IoU ("force_match_for_each_row"; when two objects share a best
    anchor the first one keeps it).

    Args:
      gt_boxes: ``(M, 4)`` normalised corner boxes, M >= 1 (padded).
      gt_classes: ``(M,)`` int object classes ``0..K-1``.
      gt_valid: ``(M,)`` bool; padding rows are ignored.
      anchors: ``(A, 4)`` normalised ``(cx, cy, w, h)``.
      threshold: IoU needed for a positive anchor.

    Returns:
      ``classes (A,)`` int32: 0 for background, object class + 1 otherwise;
      ``targets (A, 4)``: ``encode`` of the matched box (meaningful only
      where ``classes > 0``).
    """
    overlaps = jnp.where(gt_valid[:, None], iou(gt_boxes, center_to_corners(anchors)), -1.0)
    best_object = jnp.argmax(overlaps, 0)
    positive = jnp.max(overlaps, 0) >= threshold
    forced = jax.nn.one_hot(jnp.argmax(overlaps, 1), anchors.shape[0], dtype=bool)
    forced = forced & gt_valid[:, None]
    is_forced = jnp.any(forced, 0)
    matched = jnp.where(is_forced, jnp.argmax(forced, 0), best_object)
    classes = jnp.where(positive | is_forced, gt_classes[matched].astype(jnp.int32) + 1, 0)
    return classes, encode(gt_boxes[matched], anchors)


def hard_negatives(losses: jax.Array, positives: jax.Array, ratio: int = 3) -> jax.Array:
    """Per image, the ``ratio * positives`` non-positive anchors of highest loss (SSD, 3:1).

    Args:
      losses: ``(B, A)`` classification loss of every anchor.
      positives: ``(B, A)`` bool.
      ratio: negatives per positive (capped by the number of negatives).

    Returns:
      ``(B, A)`` bool: the mined negatives. Ranks come from a double argsort,
      so the count is exact and the function jits with fixed shapes.
    """
    num_positive = jnp.sum(positives, 1, keepdims=True)
    num_negative = jnp.minimum(ratio * num_positive, positives.shape[1] - num_positive)
    candidates = jnp.where(positives, -jnp.inf, jax.lax.stop_gradient(losses))
    rank = jnp.argsort(jnp.argsort(-candidates, axis=1), axis=1)
    return (rank < num_negative) & ~positives


def _normalized_boxes(boxes: jax.Array, image_size: int | Sequence[int]) -> jax.Array:
    height, width = _pair(image_size)
    return boxes.astype(jnp.float32) / jnp.asarray([width, height, width, height], jnp.float32)


def multibox_loss(outputs: tuple[jax.Array, jax.Array], targets: dict, mask: jax.Array,
                  anchors: jax.Array, *, image_size: int | Sequence[int],
                  threshold: float = 0.5, negative_ratio: int = 3) -> tuple[jax.Array, dict]:
    """The SSD loss: softmax classification with hard-negative mining + smooth L1 boxes.

    ``L = (sum over positives and mined negatives of CE + sum over positives
    of smooth-L1(deltas - targets)) / number of positives`` (SSD eq. 1, with
    the TF OD API normalisation by matches over the whole batch).

    Args:
      outputs: ``(class_logits (B, A, K + 1), box_deltas (B, A, 4))`` as
        ``SSDLite`` returns them (background at index 0).
      targets: ``{"boxes": (B, M, 4) xyxy pixels (x1 exclusive), "classes":
        int (B, M) in 0..K-1, "valid": bool (B, M), ...}`` (other keys ignored).
      mask: ``(B,)`` 1 for real examples, 0 for padding (which contribute nothing).
      anchors: ``(A, 4)`` normalised ``(cx, cy, w, h)`` (``SSDLite.anchors``).
      image_size: ``(H, W)`` (or an int) of the input, to normalise the boxes.
      threshold: matching IoU (``match``).
      negative_ratio: mined negatives per positive (``hard_negatives``).

    Returns:
      ``(loss, stats)``; stats are batch sums: ``positives``, ``negatives``,
      ``class_loss`` and ``box_loss`` (the two unnormalised terms).
    """
    logits, deltas = outputs
    anchors = jnp.asarray(anchors, jnp.float32)
    classes, box_targets = jax.vmap(match, in_axes=(0, 0, 0, None, None))(
        _normalized_boxes(targets["boxes"], image_size), targets["classes"],
        targets["valid"], anchors, threshold)
    positives = (classes > 0) & (mask > 0)[:, None]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    negatives = hard_negatives(cross_entropy, positives, negative_ratio)
    class_loss = jnp.sum(jnp.where(positives | negatives, cross_entropy, 0.0))
    smooth_l1 = optax.huber_loss(deltas, box_targets, delta=1.0).sum(-1)
    box_loss = jnp.sum(jnp.where(positives, smooth_l1, 0.0))
    num_positive = jnp.sum(positives).astype(jnp.float32)
    loss = (class_loss + box_loss) / jnp.maximum(num_positive, 1.0)
    return loss, {"positives": num_positive, "negatives": jnp.sum(negatives).astype(jnp.float32),
                  "class_loss": class_loss, "box_loss": box_loss}


def nms(boxes: jax.Array, candidates: jax.Array, iou_threshold: float) -> jax.Array:
    """Greedy non-maximum suppression over the last box axis, batched over the others.

    Args:
      boxes: ``(..., N, 4)`` corner boxes, sorted by decreasing score.
      candidates: ``(..., N)`` bool, the boxes that may be kept (score above threshold).
      iou_threshold: a box is dropped when its IoU with a kept, higher-scored
        box exceeds it.

    Returns:
      ``(..., N)`` bool, the kept boxes. ``lax.fori_loop`` over the N ranks.
    """
    suppresses = iou(boxes, boxes) > iou_threshold
    n = boxes.shape[-2]
    ranks = jnp.arange(n)

    def visit(i, keep):
        earlier_kept = keep & (ranks < i)
        dropped = jnp.any(suppresses[..., i, :] & earlier_kept, -1)
        return keep.at[..., i].set(keep[..., i] & ~dropped)

    return jax.lax.fori_loop(0, n, visit, candidates)


def postprocess(outputs: tuple[jax.Array, jax.Array], anchors: jax.Array, *,
                image_size: int | Sequence[int], score_threshold: float = 0.01,
                iou_threshold: float = 0.6, max_detections: int = 100,
                pre_nms_top_k: int = 200) -> dict[str, jax.Array]:
    """Detections with class-wise NMS, fixed size (TF ``batch_multiclass_non_max_suppression``).

    Softmax scores without background; boxes decoded and clipped to the
    image; per class the ``pre_nms_top_k`` best anchors go through greedy
    NMS (``nms``); the ``max_detections`` best kept boxes over all classes
    are returned. Without the top-k cut (``pre_nms_top_k >= A``) this is
    exactly per-class greedy NMS. Defaults follow ``ssdlite_mobilenet_v2``
    (IoU 0.6, 100 detections) with SSD's score threshold 0.01.

    Args:
      outputs: ``(class_logits (B, A, K + 1), box_deltas (B, A, 4))``.
      anchors: ``(A, 4)`` normalised ``(cx, cy, w, h)``.
      image_size: ``(H, W)`` (or an int) of the input, to return pixels.

    Returns:
      ``{"boxes": (B, D, 4) xyxy pixels, "scores": (B, D), "classes": int32
      (B, D) in 0..K-1, "valid": bool (B, D)}``, D = ``max_detections``,
      sorted by decreasing score; invalid slots are zero.
    """
    logits, deltas = outputs
    scores = jax.nn.softmax(logits, -1)[..., 1:]
    boxes = jnp.clip(decode(deltas, jnp.asarray(anchors, jnp.float32)), 0.0, 1.0)
    batch, num_anchors, num_classes = scores.shape
    k = min(pre_nms_top_k, num_anchors)
    class_scores, order = jax.lax.top_k(jnp.swapaxes(scores, 1, 2), k)  # (B, K, k)
    class_boxes = jnp.take_along_axis(boxes[:, None], order[..., None], axis=2)  # (B, K, k, 4)
    keep = nms(class_boxes, class_scores > score_threshold, iou_threshold)
    flat_scores = jnp.where(keep, class_scores, -1.0).reshape(batch, num_classes * k)
    flat_boxes = class_boxes.reshape(batch, num_classes * k, 4)
    shortfall = max(max_detections - num_classes * k, 0)
    flat_scores = jnp.pad(flat_scores, ((0, 0), (0, shortfall)), constant_values=-1.0)
    flat_boxes = jnp.pad(flat_boxes, ((0, 0), (0, shortfall), (0, 0)))
    top_scores, index = jax.lax.top_k(flat_scores, max_detections)
    valid = top_scores >= 0
    height, width = _pair(image_size)
    pixels = jnp.take_along_axis(flat_boxes, index[..., None], axis=1) * jnp.asarray(
        [width, height, width, height], jnp.float32)
    return {"boxes": jnp.where(valid[..., None], pixels, 0.0),
            "scores": jnp.where(valid, top_scores, 0.0),
            "classes": jnp.where(valid, index // k, 0).astype(jnp.int32),
            "valid": valid}


def pixel_cross_entropy(logits: jax.Array, targets: dict, mask: jax.Array
                        ) -> tuple[jax.Array, dict]:
    """Mean softmax cross-entropy over the pixels of the real examples (DeepLab's loss).

    Args:
      logits: ``(B, h, w, C)``; at another size than the labels' they are
        resized bilinearly to ``H x W`` first (DeepLab's ``upsample_logits``).
      targets: ``{"segmentation": uint8 (B, H, W) in 0..C-1, ...}``.
      mask: ``(B,)`` 1 for real examples, 0 for padding.

    Returns:
      ``(loss, stats)``; stats are batch sums over real pixels:
      ``pixels`` and ``correct_pixels`` (argmax equals the label).
    """
    labels = targets["segmentation"].astype(jnp.int32)
    logits = resize_dense(logits, *labels.shape[1:3])
    weights = jnp.broadcast_to((mask > 0)[:, None, None], labels.shape)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    pixels = jnp.sum(weights).astype(jnp.float32)
    loss = jnp.sum(jnp.where(weights, losses, 0.0)) / jnp.maximum(pixels, 1.0)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & weights).astype(jnp.float32)
    return loss, {"pixels": pixels, "correct_pixels": correct}
