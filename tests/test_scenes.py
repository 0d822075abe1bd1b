"""Fashion-MNIST scenes: determinism, split separation, exact targets, COCO export, errors."""

import json

import numpy as np
import pytest

from zylax import data, scenes

THRESHOLD = 32


@pytest.fixture(scope="module")
def train_scenes(fmnist_train):
    return scenes.generate(*fmnist_train, 192, seed=5)


def _tight_box(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_same_seed_same_scenes_other_seed_other_scenes(fmnist_train, train_scenes):
    images, targets = train_scenes
    again_images, again = scenes.generate(*fmnist_train, 192, seed=5)
    np.testing.assert_array_equal(images, again_images)
    for key, value in targets.items():
        np.testing.assert_array_equal(value, again[key], err_msg=key)
    other_images, other = scenes.generate(*fmnist_train, 192, seed=6)
    assert not np.array_equal(images, other_images)
    assert not np.array_equal(targets["source"], other["source"])


def test_shapes_dtypes_and_padding(train_scenes):
    images, targets = train_scenes
    assert images.shape == (192, 96, 96, 1) and images.dtype == np.uint8
    expected = {"boxes": ((192, 4, 4), np.float32), "classes": ((192, 4), np.int32),
                "valid": ((192, 4), bool), "segmentation": ((192, 96, 96), np.uint8),
                "instances": ((192, 96, 96), np.uint8), "source": ((192, 4), np.int32)}
    for key, (shape, dtype) in expected.items():
        assert targets[key].shape == shape and targets[key].dtype == dtype, key
    valid = targets["valid"]
    count = valid.sum(1)
    assert count.min() >= 1 and count.max() <= 4 and len(np.unique(count)) == 4
    # Items come first in paste order, padded slots after them, all zeros (source -1).
    np.testing.assert_array_equal(valid, np.arange(4) < count[:, None])
    assert not targets["boxes"][~valid].any() and not targets["classes"][~valid].any()
    assert (targets["source"][~valid] == -1).all()


def test_every_box_is_the_tight_box_of_its_visible_pixels(train_scenes):
    _, targets = train_scenes
    for scene in range(192):
        instances = targets["instances"][scene]
        assert instances.max() <= targets["valid"][scene].sum()
        for slot in range(4):
            mine = instances == slot + 1
            assert mine.any() == targets["valid"][scene, slot]
            if mine.any():
                np.testing.assert_array_equal(targets["boxes"][scene, slot], _tight_box(mine))


def test_segmentation_labels_are_the_classes_and_the_bright_pixels(fmnist_train, train_scenes):
    images, targets = train_scenes
    _, labels = fmnist_train
    valid, source, classes = targets["valid"], targets["source"], targets["classes"]
    np.testing.assert_array_equal(classes[valid], labels[source[valid]])
    instances = targets["instances"].astype(np.int64)
    lookup = np.concatenate([np.zeros((192, 1), np.int64), classes + 1], axis=1)
    expected = np.take_along_axis(lookup, instances.reshape(192, -1), axis=1)
    np.testing.assert_array_equal(targets["segmentation"], expected.reshape(192, 96, 96))
    # An image pixel is above the threshold exactly where an item is visible.
    np.testing.assert_array_equal(images[..., 0] > THRESHOLD, targets["segmentation"] > 0)


def test_occlusion_removes_covered_items_and_never_covers_the_last():
    # Solid squares of side 20 (400 foreground pixels each), so visibility is countable.
    squares = np.full((10, 28, 28), 255, np.uint8)
    _, targets = scenes.generate(squares, np.arange(10), 256, seed=1, item_sizes=(20, 20),
                                 max_overlap=1.0, min_visible=0.5)
    visible = np.stack([(targets["instances"] == k + 1).sum((1, 2)) for k in range(4)], axis=1)
    valid, count = targets["valid"], targets["valid"].sum(1)
    assert (visible[valid] >= 200).all() and (visible[~valid] == 0).all()
    np.testing.assert_array_equal(visible[np.arange(256), count - 1], 400)
    assert (visible[valid] < 400).any(), "no square was partly covered; the test tests nothing"


def test_min_items_holds_and_impossible_settings_say_so(fmnist_train):
    _, targets = scenes.generate(*fmnist_train, 64, min_items=3)
    assert targets["valid"].sum(1).min() >= 3
    squares = np.full((1, 28, 28), 255, np.uint8)
    with pytest.raises(ValueError, match="could not fit min_items=2"):
        scenes.generate(squares, [0], 4, size=50, item_sizes=(30, 30), min_items=2,
                        max_overlap=0.0)


def test_each_split_uses_only_its_own_items(fmnist_train, fmnist_test):
    for split, (items, labels) in (("train", fmnist_train), ("test", fmnist_test)):
        images, targets = scenes.load(split, 48)
        expected_images, expected = scenes.generate(items, labels, 48,
                                                    seed=scenes.SPLIT_SEEDS[split])
        np.testing.assert_array_equal(images, expected_images)
        for key, value in targets.items():
            np.testing.assert_array_equal(value, expected[key], err_msg=key)
        valid = targets["valid"]
        assert targets["source"][valid].max() < len(items)
        np.testing.assert_array_equal(targets["classes"][valid], labels[targets["source"][valid]])
    assert scenes.SPLIT_SEEDS["train"] != scenes.SPLIT_SEEDS["test"]
    assert scenes.SPLIT_SIZES == {"train": 60000, "test": 10000}


def test_coco_json_loads_in_pycocotools(tmp_path, train_scenes, capsys):
    from pycocotools.coco import COCO

    _, targets = train_scenes
    path = tmp_path / "scenes.json"
    scenes.write_coco_json(path, targets)
    coco = COCO(str(path))
    capsys.readouterr()
    assert coco.getCatIds() == list(range(1, 11))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(scenes.CLASS_NAMES)
    assert coco.getImgIds() == list(range(1, 193))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == targets["valid"].sum()
    scene, slot = np.nonzero(targets["valid"])
    for ann, s, k in zip(annotations, scene, slot):
        x0, y0, x1, y1 = targets["boxes"][s, k]
        assert ann["image_id"] == s + 1 and ann["category_id"] == targets["classes"][s, k] + 1
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0] and ann["area"] == (x1 - x0) * (y1 - y0)
        assert ann["iscrowd"] == 0
    assert json.loads(path.read_text()) == scenes.coco_ground_truth(targets)
    custom = scenes.coco_ground_truth(targets, image_ids=range(100, 292))
    assert custom["images"][0]["id"] == 100 and custom["annotations"][0]["image_id"] == 100


@pytest.mark.parametrize("kwargs, message", [
    ({"num_scenes": 0}, "num_scenes must be a positive integer"),
    ({"item_sizes": (20, 100)}, "item_sizes must be"),
    ({"item_sizes": (30, 20)}, "item_sizes must be"),
    ({"max_items": 0}, "max_items must be in 1..127"),
    ({"min_items": 5}, "min_items must be in 1..max_items=4"),
    ({"max_overlap": 1.5}, r"max_overlap must be in \[0, 1\]"),
    ({"threshold": 255}, "threshold must be in 0..254"),
    ({"min_visible": -0.1}, r"min_visible must be in \[0, 1\]"),
])
def test_bad_settings_are_one_line_errors(fmnist_test, kwargs, message):
    items, labels = fmnist_test
    args = {"num_scenes": 4, **kwargs}
    with pytest.raises(ValueError, match=message) as err:
        scenes.generate(items[:50], labels[:50], **args)
    assert "\n" not in str(err.value)


def test_bad_items_and_splits_are_one_line_errors(fmnist_test):
    items, labels = fmnist_test
    with pytest.raises(ValueError, match="items must be uint8"):
        scenes.generate(items[:5, :20], labels[:5], 4)
    with pytest.raises(ValueError, match="one label per item"):
        scenes.generate(items[:5], labels[:4], 4)
    with pytest.raises(ValueError, match="one label per item"):
        scenes.generate(items[:0], labels[:0], 4)
    with pytest.raises(ValueError, match=r"item labels must be in \[0, 10\)"):
        scenes.generate(items[:5], labels[:5] + 10, 4)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        scenes.load("valid")
    with pytest.raises(ValueError, match="image_ids must be 2 distinct integers"):
        scenes.coco_ground_truth(scenes.generate(items[:5], labels[:5], 2)[1], image_ids=[1, 1])


def test_flip_scenes_mirrors_images_masks_and_boxes_together(train_scenes):
    images, targets = train_scenes
    flipped_images, flipped = data.flip_scenes(images, targets, np.random.default_rng(3))
    mirrored = np.all(flipped_images == images[:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(flipped_images == images, axis=(1, 2, 3))
    assert (mirrored | unchanged).all() and 60 < (mirrored & ~unchanged).sum() < 132
    for scene in range(192):
        for key in ("segmentation", "instances"):
            source = targets[key][scene][:, ::-1] if mirrored[scene] else targets[key][scene]
            np.testing.assert_array_equal(flipped[key][scene], source)
        np.testing.assert_array_equal(flipped["classes"][scene], targets["classes"][scene])
        for slot in range(4):  # still the tight box of the item's (mirrored) pixels
            mine = flipped["instances"][scene] == slot + 1
            expected = _tight_box(mine) if mine.any() else [0, 0, 0, 0]
            np.testing.assert_array_equal(flipped["boxes"][scene, slot], expected)
    assert flipped["boxes"].dtype == targets["boxes"].dtype


def test_augmented_scene_batches_replay_and_refuse_targets_they_cannot_move(train_scenes):
    images, targets = train_scenes

    def epoch(labels, start=0):
        return list(data.batches(images, labels, 64, seed=1, epoch=2, augmenter=data.LABEL_KINDS["scenes"].augment,
                                 start=start))

    first, resumed = epoch(targets), epoch(targets, start=1)
    assert len(resumed) == len(first) - 1 == 2
    for one, other in zip(first[1:], resumed):  # a resumed epoch sees the same flips
        np.testing.assert_array_equal(one["image"], other["image"])
        np.testing.assert_array_equal(one["label"]["boxes"], other["label"]["boxes"])
    plain = list(data.batches(images, targets, 64, seed=1, epoch=2))
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, plain))
    with pytest.raises(ValueError, match=r"\['keypoints'\], which it cannot move along"):
        epoch({**targets, "keypoints": np.zeros((192, 4, 2))})
