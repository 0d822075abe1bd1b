import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from zylax import data


def test_real_fashion_mnist_shapes_and_statistics(fmnist_train, fmnist_test):
    for (images, labels), n in ((fmnist_train, 60000), (fmnist_test, 10000)):
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        assert labels.min() == 0 and labels.max() == 9
        # Fashion-MNIST is balanced: every class has exactly n / 10 examples.
        np.testing.assert_array_equal(np.bincount(labels), np.full(10, n // 10))
    # Published pixel statistics of the training split (mean 0.2860, std 0.3530).
    pixels = fmnist_train[0].astype(np.float64) / 255
    assert abs(pixels.mean() - 0.2860) < 1e-3 and abs(pixels.std() - 0.3530) < 1e-3


FMNIST = data.preprocessing("fashion_mnist")


def test_preprocess_normalises_and_pads(fmnist_train):
    x = FMNIST(fmnist_train[0][:512])
    assert x.dtype == np.float32 and abs(x.mean()) < 0.1 and abs(x.std() - 1) < 0.1
    padded = data.preprocessing("fashion_mnist", pad_to=32)(fmnist_train[0][:4])
    assert padded.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], FMNIST(fmnist_train[0][:4]))
    black = -0.2860 / 0.3530
    np.testing.assert_allclose(padded[:, 0, :], black, rtol=1e-6)


def test_shuffling_is_deterministic_per_epoch():
    a = data.epoch_permutation(1000, seed=3, epoch=1)
    np.testing.assert_array_equal(a, data.epoch_permutation(1000, seed=3, epoch=1))
    assert not np.array_equal(a, data.epoch_permutation(1000, seed=3, epoch=2))
    assert not np.array_equal(a, data.epoch_permutation(1000, seed=4, epoch=1))
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))


def test_batches_drop_and_pad_remainder(fmnist_test):
    images, labels = fmnist_test[0][:250], fmnist_test[1][:250]
    dropped = list(data.batches(images, labels, 100, preprocess=FMNIST, remainder="drop"))
    assert len(dropped) == 2 and all(b["mask"].sum() == 100 for b in dropped)
    padded = list(data.batches(images, labels, 100, preprocess=FMNIST, shuffle=False,
                               remainder="pad"))
    assert len(padded) == 3 and padded[-1]["mask"].sum() == 50
    assert padded[-1]["image"].shape == (100, 28, 28, 1)
    seen = np.concatenate([b["label"][b["mask"] > 0] for b in padded])
    np.testing.assert_array_equal(seen, labels)
    resumed = list(data.batches(images, labels, 100, preprocess=FMNIST, seed=1, start=1))
    full = list(data.batches(images, labels, 100, preprocess=FMNIST, seed=1))
    np.testing.assert_array_equal(resumed[0]["label"], full[1]["label"])


def test_missing_data_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", "train")


def test_environment_variable_points_at_other_idx_files(tmp_path, monkeypatch):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">u4").tobytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    label_header = bytes([0, 0, 8, 1]) + np.array([2], ">u4").tobytes()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(label_header + bytes([7, 1]))
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path))
    got_images, got_labels = data.load("fashion_mnist", "test")
    np.testing.assert_array_equal(got_images[..., 0], images)
    np.testing.assert_array_equal(got_labels, [7, 1])


def test_truncated_idx_file_is_rejected(tmp_path):
    header = bytes([0, 0, 8, 1]) + np.array([5], ">u4").tobytes()
    (tmp_path / "bad").write_bytes(header + bytes([1, 2]))
    with pytest.raises(data.DamagedDatasetError, match="bad: header promises 5 bytes") as info:
        data.read_idx(tmp_path / "bad")
    assert isinstance(info.value, ValueError) and str(tmp_path / "bad") in str(info.value)
    (tmp_path / "bad.gz").write_bytes(header + bytes([1, 2, 3, 4, 5]))  # not gzip
    with pytest.raises(data.DamagedDatasetError, match=r"bad\.gz: damaged"):
        data.read_idx(tmp_path / "bad.gz")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.load("mnist", "val")


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_path_with_mock_data(name, shape):
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        images, labels = data.load(name, "test")
    assert images.shape == (6, *shape) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < 10
    batch = next(data.batches(images, labels, 4, preprocess=data.preprocessing(name)))
    assert batch["image"].shape == (4, *shape) and batch["image"].dtype == np.float32


def test_augment_flips_and_shifts_within_bounds():
    images = np.random.default_rng(0).integers(1, 256, (64, 28, 28, 1)).astype(np.uint8)
    out = data.augment(images, np.random.default_rng(1), max_shift=2)
    assert out.shape == images.shape and out.dtype == np.uint8
    for x, y in zip(images, out):  # each output is a flipped or not, shifted copy
        found = False
        for flipped in (x, x[:, ::-1]):
            padded = np.pad(flipped, ((2, 2), (2, 2), (0, 0)))
            found |= any(np.array_equal(padded[t:t + 28, s:s + 28], y)
                         for t in range(5) for s in range(5))
        assert found
    assert not np.array_equal(out, images)
    np.testing.assert_array_equal(out, data.augment(images, np.random.default_rng(1), 2))


def test_augmented_batches_are_reproducible_and_resumable(fmnist_train):
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    kwargs = dict(preprocess=data.preprocessing("fashion_mnist", 32), seed=3, epoch=1,
                  augmenter=data.LABEL_KINDS["classes"].augment)
    full = list(data.batches(images, labels, 128, **kwargs))
    resumed = list(data.batches(images, labels, 128, start=2, **kwargs))
    plain = list(data.batches(images, labels, 128, **{**kwargs, "augmenter": None}))
    np.testing.assert_array_equal(full[2]["image"], resumed[0]["image"])
    assert not np.array_equal(full[0]["image"], plain[0]["image"])
    np.testing.assert_array_equal(full[0]["label"], plain[0]["label"])
