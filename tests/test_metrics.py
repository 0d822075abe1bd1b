"""COCO box AP through pycocotools on the scenes, and the segmentation metrics."""

import jax
import numpy as np
import pytest

from zylax import metrics, scenes


@pytest.fixture(scope="module")
def test_scenes(fmnist_test):
    return scenes.generate(*fmnist_test, 128, seed=2)[1]


def _as_detections(targets, boxes=None):
    return {"boxes": targets["boxes"] if boxes is None else boxes,
            "scores": np.ones(targets["valid"].shape, np.float32),
            "classes": targets["classes"], "valid": targets["valid"]}


def test_ground_truth_fed_back_scores_one(test_scenes):
    result = metrics.coco_detection_metrics(test_scenes, _as_detections(test_scenes))
    assert set(result) == set(metrics.COCO_STATS)
    assert result["mAP"] == result["AP50"] == result["AP75"] == result["AR100"] == 1.0


def test_boxes_shifted_to_iou_0_527_count_only_at_iou_0_5(test_scenes):
    # Shifting a w-wide box right by 0.31 w leaves IoU (1 - 0.31) / (1 + 0.31) = 0.527:
    # a match at IoU threshold 0.50 only, of the ten 0.50:0.05:0.95. So AP50 = 1,
    # AP at every other threshold is 0, and mAP = 1/10.
    boxes = test_scenes["boxes"].copy()
    shift = 0.31 * (boxes[..., 2] - boxes[..., 0])
    boxes[..., 0] += shift
    boxes[..., 2] += shift
    result = metrics.coco_detection_metrics(test_scenes, _as_detections(test_scenes, boxes))
    assert result["AP50"] == 1.0 and result["AP75"] == 0.0
    assert result["mAP"] == pytest.approx(0.1, abs=1e-12)


def test_half_the_objects_found_gives_51_of_101_recall_points():
    # One image, one class, two objects, one exact detection: precision 1 up to
    # recall 0.5, then nothing. COCO samples precision at recall 0, 0.01, ..., 1:
    # 51 of the 101 points are 1, so AP = 51/101 at every IoU threshold.
    targets = {"boxes": np.array([[[0, 0, 20, 20], [50, 50, 80, 90]]], np.float32),
               "classes": np.array([[3, 3]], np.int32), "valid": np.ones((1, 2), bool),
               "segmentation": np.zeros((1, 96, 96), np.uint8)}
    detections = {**_as_detections(targets), "valid": np.array([[True, False]])}
    result = metrics.coco_detection_metrics(targets, detections)
    assert result["mAP"] == pytest.approx(51 / 101) and result["AR100"] == pytest.approx(0.5)


def test_no_detections_scores_zero_not_a_crash(test_scenes):
    detections = {**_as_detections(test_scenes), "valid": np.zeros_like(test_scenes["valid"])}
    result = metrics.coco_detection_metrics(test_scenes, detections)
    assert result["mAP"] == result["AP50"] == result["AR100"] == 0.0


def test_detections_of_the_wrong_shape_are_refused(test_scenes):
    detections = _as_detections(test_scenes)
    with pytest.raises(ValueError, match="detections need boxes"):
        metrics.coco_detection_metrics(test_scenes, {**detections, "scores": np.ones((128, 3))})
    with pytest.raises(ValueError, match="detections cover 64 scenes, the targets 128"):
        metrics.coco_detection_metrics(test_scenes, {k: v[:64] for k, v in detections.items()})


def test_confusion_matrix_matches_numpy_under_jit_with_mask_and_ignored_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, (4, 16, 16))
    labels[0, 0, :5] = 255  # an "ignore" label is not counted
    predictions = rng.integers(0, 11, (4, 16, 16))
    mask = rng.random((4, 16, 16)) < 0.7
    confusion = jax.jit(metrics.confusion_matrix, static_argnums=2)(predictions, labels, 11, mask)
    counted = mask & (labels < 11)
    expected = np.zeros((11, 11), np.int64)
    np.add.at(expected, (labels[counted], predictions[counted]), 1)
    assert confusion.dtype == np.int32
    np.testing.assert_array_equal(confusion, expected)
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, labels, 11).sum(),
                                  (labels < 11).sum())


def test_mean_iou_and_pixel_accuracy_of_a_hand_made_confusion():
    confusion = np.array([[5, 1, 0],    # true class 0: 5 right, 1 taken for class 1
                          [2, 3, 0],    # true class 1: 3 right, 2 taken for class 0
                          [0, 0, 0]])   # class 2: never true, never predicted
    # IoU_0 = 5 / (6 + 7 - 5) = 5/8, IoU_1 = 3 / (5 + 4 - 3) = 1/2, class 2 left out.
    np.testing.assert_allclose(metrics.class_iou(confusion), [5 / 8, 1 / 2, np.nan])
    assert float(metrics.mean_iou(confusion)) == pytest.approx((5 / 8 + 1 / 2) / 2)
    assert float(metrics.pixel_accuracy(confusion)) == pytest.approx(8 / 11)
    assert float(jax.jit(metrics.mean_iou)(np.eye(11) * 7)) == 1.0
