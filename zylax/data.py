"""Image classification data: real files first, TFDS second, and a batch iterator.

``load(name, split)`` returns ``(images, labels)`` as ``uint8 (N, H, W, C)`` and
``int32 (N,)`` NumPy arrays.

* ``fashion_mnist`` is read from the IDX files of Debian's package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``; override the
  folder with ``$ZYLAX_FASHION_MNIST_DIR``). Where those files are absent it falls
  back to TFDS.
* ``mnist`` and ``cifar10`` come from TFDS (``tfds.data_source``, which reads
  ArrayRecord files without TensorFlow and downloads them when online).

``batches`` yields dicts ``{"image": float32 (B, H, W, C), "label": int32 (B,),
"mask": float32 (B,)}``. The last partial batch is either dropped
(``remainder="drop"``, for training: every step sees a full batch) or padded
with zero images whose ``mask`` is 0 (``remainder="pad"``, for evaluation: every
example is counted exactly once).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

import numpy as np

FASHION_MNIST_DIR_ENV = "ZYLAX_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

DATASETS = ("fashion_mnist", "mnist", "cifar10")
SPLITS = ("train", "test")

# Per-channel mean and std of the training split, pixel values in [0, 1].
NORMALIZATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_INSTALL_HINT = (
    "Install the real files with `sudo apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu), point ${env} at a folder holding the four IDX files "
    "(train-images-idx3-ubyte[.gz], ...), or go online so that TFDS can download "
    "'{name}'."
)


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor obtainable through TFDS."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) into a NumPy array.

    The IDX header is two zero bytes, a type code (0x08 = uint8), the number of
    dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path}: header promises {expected} bytes of data, file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(tuple(dims))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def fashion_mnist_dir() -> Path:
    """The folder searched for the Fashion-MNIST IDX files."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV, DEFAULT_FASHION_MNIST_DIR))


def load_idx_split(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of an MNIST-format dataset from IDX files in ``folder``.

    Returns ``images`` uint8 ``(N, 28, 28, 1)`` and ``labels`` int32 ``(N,)``.
    Raises ``DatasetNotFoundError`` naming the folder when a file is missing.
    """
    folder = Path(folder)
    image_stem, label_stem = _IDX_FILES[split]
    image_path, label_path = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
    if image_path is None or label_path is None:
        raise DatasetNotFoundError(
            f"no IDX files for split '{split}' in {folder} (looked for {image_stem}[.gz] "
            f"and {label_stem}[.gz]). "
            + _INSTALL_HINT.format(env=FASHION_MNIST_DIR_ENV, name="fashion_mnist"))
    images = read_idx(image_path)[..., None]
    labels = read_idx(label_path).astype(np.int32)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def load_tfds_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads a split through ``tfds.data_source`` (downloads when online)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split)
    except Exception as err:  # TFDS raises many kinds: network, missing builder, ...
        raise DatasetNotFoundError(
            f"TFDS could not provide '{name}' split '{split}': {err}. "
            + _INSTALL_HINT.format(env=FASHION_MNIST_DIR_ENV, name=name)) from err
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return images, labels


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads ``split`` ('train' or 'test') of dataset ``name``.

    Returns:
      images: uint8 ``(N, H, W, C)``; labels: int32 ``(N,)`` in ``[0, num_classes)``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if name == "fashion_mnist":
        folder = fashion_mnist_dir()
        if folder.is_dir() or FASHION_MNIST_DIR_ENV in os.environ:
            return load_idx_split(folder, split)
    return load_tfds_split(name, split)


def num_classes(labels: np.ndarray) -> int:
    """Number of classes implied by integer labels (max + 1)."""
    return int(labels.max()) + 1


def preprocess(images: np.ndarray, name: str, pad_to: int | None = None) -> np.ndarray:
    """uint8 ``(B, H, W, C)`` -> normalised float32, optionally zero-padded to ``pad_to``.

    Normalisation is ``(x / 255 - mean) / std`` with the training-split statistics
    in ``NORMALIZATION``; padding (LeNet's 28 -> 32) adds the normalised value of
    a black pixel around the image, centred.
    """
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[name])
    x = (images.astype(np.float32) / 255.0 - mean) / std
    if pad_to is not None:
        height, width = x.shape[1:3]
        if pad_to < max(height, width):
            raise ValueError(f"pad_to={pad_to} is smaller than the image {height}x{width}")
        top, left = (pad_to - height) // 2, (pad_to - width) // 2
        black = -mean / std
        out = np.broadcast_to(black, (x.shape[0], pad_to, pad_to, x.shape[3])).copy()
        out[:, top:top + height, left:left + width] = x
        x = out
    return x


def augment(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Random horizontal flip (p = 1/2) and translation by up to ``max_shift`` pixels.

    ``images`` uint8 ``(B, H, W, C)``; returns the same shape and dtype, with
    the pixels shifted in filled black (0). Standard training-time
    augmentation for small images; evaluation never augments.
    """
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    top = rng.integers(0, 2 * max_shift + 1, b)
    left = rng.integers(0, 2 * max_shift + 1, b)
    flip = rng.random(b) < 0.5
    cols = np.where(flip[:, None], left[:, None] + np.arange(w)[::-1], left[:, None] + np.arange(w))
    rows = top[:, None] + np.arange(h)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffling order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def num_batches(num_examples: int, batch_size: int, remainder: str) -> int:
    """How many batches ``batches`` yields for these settings."""
    if remainder == "drop":
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *, name: str,
            seed: int = 0, epoch: int = 0, shuffle: bool = True, remainder: str = "drop",
            pad_to: int | None = None, start: int = 0,
            augment_images: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yields preprocessed batches of one epoch.

    Args:
      images, labels: as returned by ``load``.
      batch_size: examples per batch (B).
      name: dataset name, selects the normalisation.
      seed, epoch: the shuffle order is ``epoch_permutation(N, seed, epoch)``.
      shuffle: if False, examples come in file order.
      remainder: "drop" (skip the last partial batch) or "pad" (pad it with
        masked-out zero examples).
      pad_to: zero-pad images to ``pad_to x pad_to`` (e.g. 32 for the CNNs).
      start: index of the first batch to yield (resuming mid-epoch).
      augment_images: apply ``augment`` with a generator seeded by (seed,
        epoch, batch), so a resumed epoch sees the same images.

    Yields:
      ``{"image": float32 (B, H', W', C), "label": int32 (B,), "mask": float32 (B,)}``.
    """
    if remainder not in ("drop", "pad"):
        raise ValueError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    n = images.shape[0]
    order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
    for b in range(start, num_batches(n, batch_size, remainder)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        valid = idx.shape[0]
        mask = np.ones(batch_size, np.float32)
        if valid < batch_size:
            idx = np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)])
            mask[valid:] = 0.0
        batch = images[idx]
        if augment_images:
            batch = augment(batch, np.random.default_rng([seed, epoch, b]))
        yield {"image": preprocess(batch, name, pad_to) * mask[:, None, None, None],
               "label": labels[idx] * (mask > 0), "mask": mask}
