"""Image data: registered datasets (real files first, TFDS second), and a batch iterator.

``load(name, split)`` returns ``(images, labels)`` as ``uint8 (N, H, W, C)`` and
``int32 (N,)`` NumPy arrays (scene datasets: a dict of targets). Every name is
a ``Dataset`` in one registry (``register``, ``get``, ``names``): its loader,
its published normalisation, its image shape and the kind of its labels. A
new dataset is one module that calls ``register`` (and its test).

* ``fashion_mnist`` is read from the IDX files of Debian's package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``; override the
  folder with ``$ZYLAX_FASHION_MNIST_DIR``). Where those files are absent it falls
  back to TFDS.
* ``mnist`` and ``cifar10`` come from TFDS (``tfds.data_source``, which reads
  ArrayRecord files without TensorFlow and downloads them when online).
* ``fashion_mnist_scenes`` are canvases of real Fashion-MNIST items for
  detection and segmentation (``zylax.scenes``); their labels are a dict of
  fixed-size arrays (``boxes``, ``classes``, ``valid``, ``segmentation``).

``Preprocess`` turns images into model input (scale, normalise, pad); it is
an object, not a dataset-name lookup, so any data works. ``batches`` yields
dicts ``{"image": float32 (B, H, W, C), "label": int32 (B,),
"mask": float32 (B,)}``; ``"label"`` has the structure of the labels given
(an array, or a dict of arrays with a leading example axis). The last
partial batch is either dropped (``remainder="drop"``, for training: every
step sees a full batch) or padded with zero images whose ``mask`` is 0
(``remainder="pad"``, for evaluation: every example is counted exactly once).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np

FASHION_MNIST_DIR_ENV = "ZYLAX_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset: how to read a split, and what its images and labels are.

    Attributes:
      name: the registry key (``--data``).
      loader: ``(split, download) -> (images uint8 (N, H, W, C), labels)``;
        ``download=False`` must never go to the network.
      mean, std: the published per-channel normalisation of the training
        split, pixel values in [0, 1] (``preprocessing``).
      image_shape: ``(H, W, C)`` of one image, as ``loader`` returns them (commands check
        settings against it before loading).
      labels: one of ``LABEL_KINDS``; the tasks that can train on it read it
        (``zylax.tasks``).
      num_classes: its object classes (a file scored on it must have been
        built for them; segmentation adds the background).
    """

    name: str
    loader: Callable[[str, bool], tuple]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]
    labels: str = "classes"
    num_classes: int = 10

    def __post_init__(self):
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"labels must be one of {tuple(LABEL_KINDS)}, got {self.labels!r}")

    def load(self, split: str, download: bool = True):
        """``(images, labels)`` of ``split`` (``load``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return self.loader(split, download)

    def preprocessing(self, pad_to: int | None = None) -> "Preprocess":
        """The published normalisation, optionally padding the images to ``pad_to``."""
        return Preprocess(self.mean, self.std, pad_to)


_REGISTRY: dict[str, Dataset] = {}
_DATASET_MODULES = ("zylax.scenes",)
"""zylax modules that register datasets of their own when imported (looked up on first use)."""


def register(dataset: Dataset) -> Dataset:
    """Adds (or replaces) ``dataset`` under its name; returns it."""
    _REGISTRY[dataset.name] = dataset
    return dataset


def _registry() -> dict[str, Dataset]:
    for module in _DATASET_MODULES:  # they import this module, so not the other way round
        importlib.import_module(module)
    return _REGISTRY


def names() -> tuple[str, ...]:
    """The registered dataset names, the default (``fashion_mnist``) first."""
    return tuple(_registry())


def get(name: str) -> Dataset:
    """The ``Dataset`` registered as ``name`` (``ValueError`` naming the others)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; choose one of {tuple(registry)}")
    return registry[name]


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


class DamagedDatasetError(ValueError):
    """Raised when a dataset file is there but cannot be read (truncated, not gzip, bad header)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) into a NumPy array.

    The IDX header is two zero bytes, a type code (0x08 = uint8), the number of
    dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DamagedDatasetError(f"{path}: damaged ({type(err).__name__}: {err}); reinstall "
                                  "the dataset") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DamagedDatasetError(f"{path}: not a uint8 IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DamagedDatasetError(f"{path}: IDX header cut short")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DamagedDatasetError(
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
        raise DamagedDatasetError(f"{image_path}: {images.shape[0]} images but {label_path} has "
                                  f"{labels.shape[0]} labels")
    return images, labels


def load_tfds_split(name: str, split: str, download: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Loads a split through ``tfds.data_source``: from this machine, or downloaded when
    ``download`` (and online). Quiet: TFDS's log lines and progress bars are off."""
    import absl.logging  # here, not at the top: TFDS is heavy and only serves data not on disk
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)
    tfds.disable_progress_bar()
    if not download and not tfds.builder(name).is_prepared():
        raise DatasetNotFoundError(
            f"'{name}' is not on this machine, and zylax downloads a dataset only when you "
            f"name it (zylax train/evaluate --data {name}, or data.load({name!r}, split))")
    try:
        source = tfds.data_source(name, split=split)
    except Exception as err:  # TFDS raises many kinds: network, missing builder, ...
        hint = (_INSTALL_HINT.format(env=FASHION_MNIST_DIR_ENV, name=name)
                if name == "fashion_mnist" else
                f"TFDS downloads '{name}' when online; offline, prepare it with TFDS first.")
        raise DatasetNotFoundError(f"TFDS could not provide '{name}' split '{split}': "
                                   f"{str(err).splitlines()[0] if str(err) else err!r}. "
                                   + hint) from err
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return images, labels


def load(name: str, split: str, download: bool = True):
    """Loads ``split`` ('train' or 'test') of the registered dataset ``name``.

    ``download=False`` never goes to the network: a dataset that is not on
    this machine raises ``DatasetNotFoundError`` (what a dataset named by a
    file's metadata gets: a file never makes zylax download).

    Returns:
      images: uint8 ``(N, H, W, C)``; labels: int32 ``(N,)`` in ``[0, num_classes)``,
      or for scene datasets the targets dict of ``zylax.scenes.load``.
    """
    return get(name).load(split, download)


def _fashion_mnist(split: str, download: bool):
    """The Debian package's IDX files when present (or ``$ZYLAX_FASHION_MNIST_DIR`` is set),
    else TFDS."""
    folder = fashion_mnist_dir()
    if folder.is_dir() or FASHION_MNIST_DIR_ENV in os.environ:
        return load_idx_split(folder, split)
    return load_tfds_split("fashion_mnist", split, download)


def prefix(split: tuple, count: int | None) -> tuple:
    """The first ``count`` examples of ``(images, labels)`` (all when ``count`` is None or 0);
    ``ValueError`` when there are fewer."""
    if not count:
        return split
    if count > split[0].shape[0]:
        raise ValueError(f"{count} exceeds the {split[0].shape[0]:,} examples there are")
    keep = np.arange(count)
    return split[0][keep], take(split[1], keep)


def num_classes(labels, kind: str = "classes") -> int:
    """Number of classes implied by labels of ``kind`` (``LABEL_KINDS``): integer labels
    ``(N,)`` give max + 1; scene targets their object classes (background not counted)."""
    return LABEL_KINDS[kind].num_classes(labels)


def num_examples(labels) -> int:
    """Length of the leading axis of labels (an array, or any pytree of arrays)."""
    return int(np.shape(jax.tree.leaves(labels)[0])[0])


def take(labels, idx: np.ndarray, keep: np.ndarray | None = None):
    """``labels[idx]`` for every array of ``labels`` (an array or any pytree of arrays); rows
    where ``keep`` is False are 0."""
    def pick(a):
        rows = np.asarray(a)[idx]
        if keep is None:
            return rows
        return np.where(keep.reshape((-1,) + (1,) * (rows.ndim - 1)), rows,
                        np.zeros((), rows.dtype))
    return jax.tree.map(pick, labels)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Images -> float32 model input: ``(x - mean) / std``, optionally zero-padded to ``pad_to``.

    ``x`` is ``images / 255`` for uint8 images and the images themselves for
    float ones. ``mean``/``std`` are per channel (or one value for all);
    padding (28 -> 32 for LeNet-5 and the 32x32 nets) adds the normalised
    value of a black pixel around the image, centred. The default is
    ``x / 255`` with no normalisation. ``Preprocess.fit(train_images)``
    measures the statistics of your own data; ``preprocessing(name)`` gives
    the published ones of a named dataset. It is stored in a ``.zyl`` file's
    metadata (``to_dict``/``from_dict``), so a file evaluates without knowing
    the dataset's name.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pad_to: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in np.atleast_1d(self.mean)))
        object.__setattr__(self, "std", tuple(float(v) for v in np.atleast_1d(self.std)))
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"Preprocess needs finite means and positive stds, got mean="
                             f"{self.mean} std={self.std}")
        if self.pad_to is not None and (isinstance(self.pad_to, bool) or int(self.pad_to)
                                        != self.pad_to or not 0 < self.pad_to <= 4096):
            raise ValueError(f"pad_to must be an integer in 1..4096 or None, got {self.pad_to!r}")

    @classmethod
    def fit(cls, images: np.ndarray, pad_to: int | None = None) -> "Preprocess":
        """Per-channel mean and std of ``images`` (uint8 ``(N, H, W, C)`` or float)."""
        x = _scaled(np.asarray(images[:10000]))
        axes = tuple(range(x.ndim - 1))
        return cls(tuple(x.mean(axes)), tuple(np.maximum(x.std(axes), 1e-6)), pad_to)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(B, H, W, C)`` images -> float32 ``(B, H', W', C)``."""
        mean, std = np.float32(self.mean), np.float32(self.std)
        x = (_scaled(np.asarray(images)) - mean) / std
        if self.pad_to is None:
            return x
        height, width = x.shape[1:3]
        if self.pad_to < max(height, width):
            raise ValueError(f"pad_to={self.pad_to} is smaller than the image {height}x{width}")
        top, left = (self.pad_to - height) // 2, (self.pad_to - width) // 2
        out = np.broadcast_to(-mean / std, (x.shape[0], self.pad_to, self.pad_to, x.shape[3])
                              ).astype(np.float32)
        out[:, top:top + height, left:left + width] = x
        return out

    def to_dict(self) -> dict:
        """JSON-ready form for a file's metadata."""
        return {"mean": list(self.mean), "std": list(self.std), "pad_to": self.pad_to}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """Inverse of ``to_dict``; ``ValueError`` on bad values."""
        if d is None:
            raise ValueError("no 'preprocess' in the metadata (tasks.file_metadata records it)")
        if not isinstance(d, dict) or set(d) != {"mean", "std", "pad_to"}:
            raise ValueError(f"bad preprocessing metadata: {str(d)[:100]}")
        return cls(tuple(d["mean"]), tuple(d["std"]), d["pad_to"])


def _scaled(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def preprocessing(name: str, pad_to: int | None = None) -> Preprocess:
    """The published normalisation of the registered dataset ``name``."""
    return get(name).preprocessing(pad_to)


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


SCENE_MAPS = ("segmentation", "instances")
"""Per-pixel scene targets, ``(B, H, W)``: what ``flip_scenes`` mirrors with the images."""

SCENE_TARGETS = frozenset({"boxes", "classes", "valid", "source", *SCENE_MAPS})
"""The keys of scene targets (``zylax.scenes``), the dict labels ``flip_scenes`` can mirror."""


def flip_scenes(images: np.ndarray, targets: dict, rng: np.random.Generator
                ) -> tuple[np.ndarray, dict]:
    """Mirrors a random half (p = 1/2 each) of the scenes left-right, boxes and masks included.

    ``images`` ``(B, H, W, C)``; ``targets`` scene targets (``zylax.scenes``):
    ``"boxes"`` ``(B, M, 4)`` ``(x0, y0, x1, y1)`` with exclusive ends and
    ``"valid"`` ``(B, M)``, the maps ``SCENE_MAPS`` ``(B, H, W)``; per-item
    ``"classes"`` and ``"source"`` do not move. A mirrored box is
    ``(W - x1, y0, W - x0, y1)``, again the tight box of the mirrored pixels;
    padded (invalid) slots stay zero. Returns new arrays of the same shapes
    and dtypes. Targets with other keys are refused: they could not move along.
    """
    if not set(targets) <= SCENE_TARGETS:
        raise ValueError(f"flip_scenes mirrors images with scene targets "
                         f"{sorted(SCENE_TARGETS)} only; these targets have "
                         f"{sorted(set(targets) - SCENE_TARGETS)}, which it cannot move along")
    flip = rng.random(images.shape[0]) < 0.5
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    targets = dict(targets)
    for key in SCENE_MAPS:
        if key in targets:
            targets[key] = np.where(flip[:, None, None], targets[key][:, :, ::-1], targets[key])
    if "boxes" in targets:
        boxes, width = targets["boxes"], images.shape[2]
        x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
        mirrored = np.stack([width - x1, y0, width - x0, y1], -1).astype(boxes.dtype)
        mirrored = np.where(targets["valid"][..., None], mirrored, 0)
        targets["boxes"] = np.where(flip[:, None, None], mirrored, boxes)
    return images, targets


def _augment_classified(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``augment`` of the images; class labels do not change."""
    return augment(images, rng), labels


def _scene_classes(targets: dict) -> int:
    """Object classes of scene targets: max of the valid ``classes`` + 1."""
    return int(np.max(targets["classes"][targets["valid"]])) + 1


@dataclasses.dataclass(frozen=True)
class LabelKind:
    """What a dataset's labels are, and what training needs to know of them.

    Attributes:
      description: a few words for messages ("class labels").
      num_classes: ``labels -> int``, the classes the labels imply.
      augment: ``(images (B, H, W, C), labels of B rows, rng) -> (images,
        labels)``, a random training-time augmentation that moves the labels
        with the images.
    """

    description: str
    num_classes: Callable[[object], int]
    augment: Callable[[np.ndarray, object, np.random.Generator], tuple]


LABEL_KINDS = {
    "classes": LabelKind("class labels", lambda labels: int(np.max(labels)) + 1,
                         _augment_classified),
    "scenes": LabelKind("boxes and masks", _scene_classes, flip_scenes),
}
"""The kinds of labels by name: integer classes ``(N,)``, or scene targets (a dict of
arrays with boxes, classes and masks, ``zylax.scenes``)."""


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffling order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def num_batches(num_examples: int, batch_size: int, remainder: str) -> int:
    """How many batches ``batches`` yields for these settings."""
    if remainder == "drop":
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
            preprocess: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0,
            epoch: int = 0, shuffle: bool = True, remainder: str = "drop", start: int = 0,
            augmenter: Callable | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields preprocessed batches of one epoch.

    Args:
      images, labels: as returned by ``load`` (labels an array or a dict of
        arrays, each with N rows).
      batch_size: examples per batch (B).
      preprocess: images -> float32 model input (default ``Preprocess()``: x / 255).
      seed, epoch: the shuffle order is ``epoch_permutation(N, seed, epoch)``.
      shuffle: if False, examples come in file order.
      remainder: "drop" (skip the last partial batch) or "pad" (pad it with
        masked-out zero examples).
      start: index of the first batch to yield (resuming mid-epoch).
      augmenter: ``(images, labels, rng) -> (images, labels)`` applied to each
        batch (the ``augment`` of its ``LABEL_KINDS`` entry), with a generator
        seeded by (seed, epoch, batch), so a resumed epoch sees the same
        images.

    Yields:
      ``{"image": float32 (B, H', W', C), "label": int32 (B,), "mask": float32 (B,)}``.
    """
    if remainder not in ("drop", "pad"):
        raise ValueError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    preprocess = Preprocess() if preprocess is None else preprocess
    n = images.shape[0]
    order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
    for b in range(start, num_batches(n, batch_size, remainder)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        valid = idx.shape[0]
        mask = np.ones(batch_size, np.float32)
        if valid < batch_size:
            idx = np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)])
            mask[valid:] = 0.0
        batch, targets = images[idx], take(labels, idx, mask > 0)
        if augmenter is not None:
            batch, targets = augmenter(batch, targets, np.random.default_rng([seed, epoch, b]))
        yield {"image": preprocess(batch) * mask[:, None, None, None], "label": targets,
               "mask": mask}


register(Dataset("fashion_mnist", _fashion_mnist, (0.2860,), (0.3530,), (28, 28, 1)))
register(Dataset("mnist", lambda split, download: load_tfds_split("mnist", split, download),
                 (0.1307,), (0.3081,), (28, 28, 1)))
register(Dataset("cifar10", lambda split, download: load_tfds_split("cifar10", split, download),
                 (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (32, 32, 3)))
