"""SSD box machinery: anchors, box coding, matching, hard negatives, loss, NMS; pixel loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import detection
from zylax.detection import AnchorConfig

R2 = np.sqrt(2.0)


def test_anchors_match_hand_computed_values_for_a_2x2_and_a_1x1_map():
    config = AnchorConfig(min_scale=0.2, max_scale=0.9, aspect_ratios=(1.0, 2.0))
    anchors = config.anchors([2, (1, 1)])
    # layer 0 (reduced): (0.1, 1:1), (0.2, 2:1), (0.2, 1:2) at each of the 4 centres, row-major
    first = [(0.1, 0.1), (0.2 * R2, 0.2 / R2), (0.2 / R2, 0.2 * R2)]
    expected = [(cx, cy, w, h) for cy in (0.25, 0.75) for cx in (0.25, 0.75) for w, h in first]
    # layer 1: scale 0.9 at 1:1 and 2:1, then the interpolated sqrt(0.9 * 1.0) at 1:1
    last = np.sqrt(0.9)
    expected += [(0.5, 0.5, 0.9, 0.9), (0.5, 0.5, 0.9 * R2, 0.9 / R2), (0.5, 0.5, last, last)]
    np.testing.assert_allclose(anchors, np.asarray(expected), rtol=1e-6)
    assert anchors.dtype == np.float32
    assert config.anchors_per_location(2) == [3, 3]


def test_anchor_scales_interpolate_linearly_and_keep_pixel_aspect_on_wide_images():
    specs = AnchorConfig().box_specs(6)
    assert [len(s) for s in specs] == [3, 6, 6, 6, 6, 6]
    np.testing.assert_allclose([s[0][0] for s in specs[1:]], [0.35, 0.5, 0.65, 0.8, 0.95])
    np.testing.assert_allclose(specs[5][-1][0], np.sqrt(0.95))  # interpolated towards 1.0
    # a 100x200 (H x W) image: a 1:1 anchor is square in pixels, so half as wide normalised
    square = AnchorConfig(aspect_ratios=(1.0,), reduce_boxes_in_lowest_layer=False,
                          interpolated_scale_aspect_ratio=0.0)
    (cx, cy, w, h), = square.anchors([1], image_size=(100, 200))
    assert (cx, cy) == (0.5, 0.5) and w * 200 == pytest.approx(h * 100)


def test_encode_decode_round_trip_and_scale_factors():
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0.2, 0.8, (50, 2)), rng.uniform(0.05, 0.5, (50, 2))],
                             1).astype(np.float32)
    boxes = np.asarray(detection.center_to_corners(anchors[::-1] * [1.0, 1.0, 0.7, 1.3]))
    round_trip = jax.jit(lambda b, a: detection.decode(detection.encode(b, a), a))
    np.testing.assert_allclose(round_trip(boxes, anchors), boxes, atol=1e-5)
    # an anchor-shaped box encodes to zero; shifting it by 10% of the width gives tx = 1 (1/0.1),
    # doubling its height gives th = log(2) / 0.2
    anchor = jnp.array([[0.5, 0.5, 0.2, 0.4]] * 2)
    boxes = detection.center_to_corners(jnp.array([[0.5, 0.5, 0.2, 0.4], [0.52, 0.5, 0.2, 0.8]]))
    np.testing.assert_allclose(detection.encode(boxes, anchor),
                               [[0, 0, 0, 0], [1, 0, 0, np.log(2) / 0.2]], atol=1e-5)


def test_match_thresholds_forces_each_objects_best_anchor_and_ignores_padding():
    anchors = jnp.array([[0.25, 0.25, 0.2, 0.2],   # IoU 1 with object A
                         [0.31, 0.25, 0.2, 0.2],   # IoU 0.14 / 0.26 = 0.54 with A
                         [0.70, 0.70, 0.2, 0.2],   # IoU 1/7 with B: its best, forced
                         [0.70, 0.30, 0.1, 0.1]])  # overlaps nothing: background
    gt = jnp.array([[0.15, 0.15, 0.35, 0.35],      # A, class 3
                    [0.70, 0.70, 0.90, 0.90],      # B, class 7
                    [0.60, 0.60, 0.80, 0.80]])     # padding on top of anchor 2
    iou = np.asarray(detection.iou(gt, detection.center_to_corners(anchors)))
    np.testing.assert_allclose(iou[:2], [[1, 0.14 / 0.26, 0, 0], [0, 0, 1 / 7, 0]], atol=1e-6)
    match = jax.jit(detection.match, static_argnames="threshold")
    classes, targets = match(gt, jnp.array([3, 7, 1]), jnp.array([True, True, False]), anchors)
    np.testing.assert_array_equal(classes, [4, 4, 8, 0])
    np.testing.assert_allclose(targets[:3], detection.encode(gt[jnp.array([0, 0, 1])],
                                                             anchors[:3]), atol=1e-6)
    # with a higher threshold anchor 1 falls to background; the forced anchors stay
    classes, _ = match(gt, jnp.array([3, 7, 1]), jnp.array([True, True, False]), anchors,
                       threshold=0.6)
    np.testing.assert_array_equal(classes, [4, 0, 8, 0])


def test_hard_negatives_are_the_three_highest_losses_per_positive():
    losses = jnp.array([[5.0, 1.0, 4.0, 3.0, 9.0, 2.0, 8.0, 0.5],
                        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    positives = jnp.array([[0, 0, 0, 0, 1, 0, 0, 0],
                           [1, 1, 1, 0, 0, 0, 0, 0]], bool)
    negatives = np.asarray(jax.jit(detection.hard_negatives)(losses, positives))
    np.testing.assert_array_equal(np.flatnonzero(negatives[0]), [0, 2, 6])  # 8, 5, 4 (not 9)
    np.testing.assert_array_equal(np.flatnonzero(negatives[1]), [3, 4, 5, 6, 7])  # capped at 5


def _scene_batch(rng, batch=3, size=96):
    boxes = np.zeros((batch, 4, 4), np.float32)
    valid = np.zeros((batch, 4), bool)
    for b in range(batch):
        for m in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, size - 48, 2)
            side = rng.integers(20, 48)
            boxes[b, m] = (x0, y0, x0 + side, y0 + int(side * rng.uniform(0.5, 1.0)))
            valid[b, m] = True
    classes = rng.integers(0, 10, (batch, 4)).astype(np.int32)
    return {"boxes": jnp.asarray(boxes), "classes": jnp.asarray(classes),
            "valid": jnp.asarray(valid)}


@pytest.fixture(scope="module")
def small_anchors():
    config = AnchorConfig(min_scale=0.15, max_scale=0.45, aspect_ratios=(1.0, 2.0, 0.5),
                          reduce_boxes_in_lowest_layer=False)
    return jnp.asarray(config.anchors([12, 6, 3]))


@jax.jit
def _perfect_outputs(targets, anchors):
    """Logits and deltas that predict exactly the matched targets (96x96 images)."""
    classes, deltas = jax.vmap(detection.match, (0, 0, 0, None))(
        targets["boxes"] / 96, targets["classes"], targets["valid"], anchors)
    return 30.0 * jax.nn.one_hot(classes, 11), deltas


def test_multibox_loss_mines_three_negatives_per_positive_and_ignores_padding(small_anchors):
    targets = _scene_batch(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    outputs = (rng.normal(size=(3, small_anchors.shape[0], 11)).astype(np.float32),
               rng.normal(size=(3, small_anchors.shape[0], 4)).astype(np.float32))
    loss_of = jax.jit(lambda o, t, m: detection.multibox_loss(o, t, m, small_anchors,
                                                              image_size=96))
    loss, stats = loss_of(outputs, targets, jnp.ones(3))
    assert stats["positives"] >= int(targets["valid"].sum())
    assert stats["negatives"] == 3 * stats["positives"]
    assert loss == pytest.approx((stats["class_loss"] + stats["box_loss"]) / stats["positives"])
    # a padding row (mask 0) adds nothing: whatever it holds, loss and stats stay the same
    mask = jnp.array([1.0, 1.0, 0.0])
    reference = loss_of(outputs, targets, mask)
    other = jax.tree.map(lambda v: np.concatenate([v[:2], v[:1]]), (outputs, targets))
    changed = loss_of(*other, mask)
    np.testing.assert_allclose(changed[0], reference[0], rtol=1e-6)
    for name in stats:
        np.testing.assert_allclose(changed[1][name], reference[1][name], rtol=1e-6)
    assert reference[1]["positives"] < stats["positives"]


def test_perfect_predictions_give_zero_loss_and_postprocess_returns_the_objects(small_anchors):
    targets = _scene_batch(np.random.default_rng(1))
    outputs = _perfect_outputs(targets, small_anchors)

    @jax.jit
    def loss_and_detections(outputs):
        loss = detection.multibox_loss(outputs, targets, jnp.ones(3), small_anchors,
                                       image_size=96)
        return loss, detection.postprocess(outputs, small_anchors, image_size=96,
                                           max_detections=10, pre_nms_top_k=50)

    (loss, stats), found = loss_and_detections(outputs)
    assert float(loss) < 1e-6 and float(stats["box_loss"]) < 1e-6
    assert {k: v.shape for k, v in found.items()} == {
        "boxes": (3, 10, 4), "scores": (3, 10), "classes": (3, 10), "valid": (3, 10)}
    for b in range(3):
        real = np.asarray(targets["valid"][b])
        expected = sorted(zip(np.asarray(targets["classes"][b])[real].tolist(),
                              np.asarray(targets["boxes"][b])[real].round(3).tolist()))
        got = sorted(zip(np.asarray(found["classes"][b])[np.asarray(found["valid"][b])].tolist(),
                         np.asarray(found["boxes"][b])[np.asarray(found["valid"][b])]
                         .round(3).tolist()))
        assert [c for c, _ in got] == [c for c, _ in expected]
        np.testing.assert_allclose([box for _, box in got], [box for _, box in expected],
                                   atol=1e-2)


def _numpy_iou(a, b):
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(high - low, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_nms(scores, boxes, score_threshold, iou_threshold, max_detections):
    """Class-wise greedy NMS over all anchors, then the best ``max_detections``."""
    kept = []
    for c in range(scores.shape[1]):
        order = [i for i in np.argsort(-scores[:, c], kind="stable")
                 if scores[i, c] > score_threshold]
        chosen = []
        for i in order:
            if all(_numpy_iou(boxes[i], boxes[j]) <= iou_threshold for j in chosen):
                chosen.append(i)
        kept += [(scores[i, c], c, i) for i in chosen]
    return sorted(kept, reverse=True)[:max_detections]


def test_postprocess_equals_brute_force_classwise_nms():
    rng = np.random.default_rng(0)
    num_anchors, num_classes = 60, 3
    # anchors around 4 cluster centres so that many boxes overlap
    centers = rng.uniform(0.2, 0.8, (4, 2))[rng.integers(0, 4, num_anchors)]
    anchors = np.concatenate([centers + rng.normal(0, 0.03, (num_anchors, 2)),
                              rng.uniform(0.1, 0.3, (num_anchors, 2))], 1).astype(np.float32)
    logits = rng.normal(0, 2, (2, num_anchors, num_classes + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (2, num_anchors, 4)).astype(np.float32)
    settings = dict(image_size=(80, 120), score_threshold=0.2, iou_threshold=0.5,
                    max_detections=25, pre_nms_top_k=num_anchors)
    found = jax.jit(lambda o: detection.postprocess(o, anchors, **settings))((logits, deltas))
    scores = np.asarray(jax.nn.softmax(logits, -1))[..., 1:]
    boxes = np.clip(np.asarray(detection.decode(deltas, anchors)), 0, 1)
    for b in range(2):
        expected = _brute_force_nms(scores[b], boxes[b], 0.2, 0.5, 25)
        valid = np.asarray(found["valid"][b])
        assert valid.sum() == len(expected) and valid[:len(expected)].all()
        np.testing.assert_allclose(found["scores"][b][:len(expected)],
                                   [s for s, _, _ in expected], rtol=1e-5)
        np.testing.assert_array_equal(found["classes"][b][:len(expected)],
                                      [c for _, c, _ in expected])
        np.testing.assert_allclose(found["boxes"][b][:len(expected)],
                                   boxes[b][[i for _, _, i in expected]] * [120, 80, 120, 80],
                                   rtol=1e-5, atol=1e-4)
        assert not np.any(found["scores"][b][~valid]) and not np.any(found["boxes"][b][~valid])


def test_pixel_cross_entropy_averages_real_pixels_only():
    labels = np.random.default_rng(0).integers(0, 11, (3, 8, 8)).astype(np.uint8)
    logits = 20.0 * np.eye(11, dtype=np.float32)[labels]
    logits[2] = 0.0  # a padding row with a uniform (high) loss
    loss_of = jax.jit(detection.pixel_cross_entropy)
    loss, stats = loss_of(logits, {"segmentation": labels}, jnp.array([1.0, 1.0, 0.0]))
    assert float(loss) < 1e-6
    assert stats == {"pixels": 128.0, "correct_pixels": 128.0}
    loss, stats = loss_of(logits, {"segmentation": labels}, jnp.ones(3))
    assert float(loss) == pytest.approx(np.log(11) / 3, rel=1e-4)
    assert stats["correct_pixels"] == 128 + np.sum(labels[2] == 0)  # argmax of ties: 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(min_scale=0.5, max_scale=0.2), "min_scale <= max_scale"),
    (dict(min_scale=0.0), "min_scale <= max_scale"),
    (dict(aspect_ratios=(1.0, -2.0)), "aspect ratios must be positive")])
def test_bad_anchor_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnchorConfig(**kwargs)
