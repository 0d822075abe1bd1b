"""Fashion-MNIST scenes: seeded canvases of real items, for detection and segmentation.

A scene is a ``size x size`` grey canvas (default 96) holding ``min_items`` to
``max_items`` real Fashion-MNIST items, each resized to a random square side
in ``item_sizes`` and pasted at a random place. Everything follows from
``(items, num_scenes, seed, settings)``: the same call gives the same arrays.

Conventions:

* **Foreground.** A pixel of an item is foreground when its (resized) value
  is above ``threshold`` (default 32 of 255).
* **Compositing, in paste order.** A later item's foreground pixels
  overwrite the canvas; its other pixels (faint edges, the dark gaps inside
  a bag's handle) are composited with ``max``, so they neither darken what
  lies below nor hide it. A pixel of the image is above ``threshold``
  exactly where the segmentation is not background.
* **Visible pixels** of an item are its foreground pixels that no later
  item's foreground covers.
* **Boxes** are ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive
  (``x1`` = last visible column + 1): the tight box of the item's visible
  pixels, so COCO's ``[x, y, w, h]`` is ``[x0, y0, x1 - x0, y1 - y0]``.
* **Placement.** A candidate place is accepted when its box (the item's
  foreground box, scaled to its new side) overlaps every earlier item's by at most
  ``max_overlap`` of the smaller box's area; an item that finds no place in
  ``PLACEMENT_TRIES`` random tries is left out.
* **Occlusion.** An item left with fewer than ``min_visible`` of its
  foreground pixels visible is removed from the scene altogether (image and
  targets, then the scene is composited again), so every object in an image
  is annotated. Removing an item only uncovers the others, so the rule still
  holds afterwards. The last-pasted item is never covered.
* **Item count.** A scene that ends with fewer than ``min_items`` items is
  drawn again (a ``ValueError`` after ``MAX_REDRAWS`` rounds means the
  settings cannot be met).

``generate`` returns images uint8 ``(N, size, size, 1)`` and targets of fixed
shape (so batches jit without retracing), items first in paste order, padded
slots after them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os

import numpy as np

from zylax import archive, data

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
"""Fashion-MNIST class names; class ``c`` is segmentation label and COCO category ``c + 1``."""
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_SEEDS = {"train": 14_000, "test": 14_001}
"""The default seed of each split's scenes."""
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
"""The default number of scenes of each split."""
PLACEMENT_TRIES = 32
"""Random places tried per item before it is left out."""
MAX_REDRAWS = 64
"""Rounds of redrawing scenes that hold fewer than ``min_items`` items."""
_CHUNK = 2048


def generate(items: np.ndarray, item_labels: np.ndarray, num_scenes: int, *, seed: int = 0,
             size: int = 96, max_items: int = 4, min_items: int = 1,
             item_sizes: tuple[int, int] = (20, 48), max_overlap: float = 0.3,
             threshold: int = 32, min_visible: float = 0.5) -> tuple[np.ndarray, dict]:
    """Composes ``num_scenes`` seeded scenes of the given items.

    Args:
      items: uint8 ``(M, L, L)`` or ``(M, L, L, 1)`` square grey items.
      item_labels: int ``(M,)`` classes in ``[0, NUM_CLASSES)``.
      num_scenes: N, at least 1.
      seed: the scenes are a pure function of ``seed`` and the other arguments
        (``num_scenes`` included: fewer scenes are not a prefix of more).
      size: canvas side in pixels.
      max_items, min_items: items per scene (uniform in ``[min_items, max_items]``
        requested; see the module docstring for placement and occlusion).
      item_sizes: ``(smallest, largest)`` side of a resized item, inclusive.
      max_overlap: largest overlap of two items' placement boxes, as a fraction
        of the smaller box's area.
      threshold: pixel values above it are an item's foreground.
      min_visible: an item needs at least this fraction of its foreground
        pixels visible to stay in the scene.

    Returns:
      ``images`` uint8 ``(N, size, size, 1)`` and ``targets``, a dict of
      ``"boxes"`` float32 ``(N, max_items, 4)`` tight ``(x0, y0, x1, y1)`` of the
      visible pixels (exclusive ends), ``"classes"`` int32 ``(N, max_items)``
      (0 in padded slots), ``"valid"`` bool ``(N, max_items)``,
      ``"segmentation"`` uint8 ``(N, size, size)`` (0 background, ``1 + class``
      on visible pixels), ``"instances"`` uint8 ``(N, size, size)`` (0
      background, ``1 + slot`` on that slot's visible pixels), ``"source"``
      int32 ``(N, max_items)`` (index into ``items`` of each slot's item, -1
      in padded slots).
    """
    if isinstance(num_scenes, bool) or int(num_scenes) != num_scenes or num_scenes < 1:
        raise ValueError(f"num_scenes must be a positive integer, got {num_scenes!r}")
    settings = _Settings(size=size, max_items=max_items, min_items=min_items,
                         item_sizes=tuple(item_sizes), max_overlap=max_overlap,
                         threshold=threshold, min_visible=min_visible)
    items = _checked_items(items, item_labels)
    labels = np.asarray(item_labels, np.int32)
    item_boxes = _foreground_boxes(items, threshold)
    images = np.empty((num_scenes, size, size, 1), np.uint8)
    targets = _empty_targets(num_scenes, size, max_items)
    for chunk, start in enumerate(range(0, num_scenes, _CHUNK)):
        stop = min(start + _CHUNK, num_scenes)
        rng = np.random.default_rng([seed, chunk])
        image, owner, layout = _chunk(rng, stop - start, items, item_boxes, settings)
        images[start:stop, ..., 0] = image
        for key, value in _targets(owner, layout, labels).items():
            targets[key][start:stop] = value
    return images, targets


def load(split: str, num_scenes: int | None = None, *, size: int = 96,
         seed: int | None = None, download: bool = True) -> tuple[np.ndarray, dict]:
    """The scenes of ``split`` ('train' or 'test'), built from that split's items only.

    Defaults: ``SPLIT_SIZES[split]`` scenes (60,000 train, 10,000 test) with
    ``SPLIT_SEEDS[split]``; other settings are ``generate``'s defaults. The
    scenes are regenerated on each call (about 8 s for the 60,000 training
    scenes on one CPU core) and are identical every time; ``download=False``
    never fetches Fashion-MNIST. Returns ``generate``'s ``(images, targets)``.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_SEEDS)}")
    items, labels = data.load("fashion_mnist", split, download)
    return generate(items, labels, SPLIT_SIZES[split] if num_scenes is None else num_scenes,
                    seed=SPLIT_SEEDS[split] if seed is None else seed, size=size)


def coco_ground_truth(targets: dict, *, image_ids=None) -> dict:
    """The scenes' boxes as a COCO detection dataset (a JSON-ready dict).

    Args:
      targets: ``generate``'s targets (``boxes``, ``classes``, ``valid``,
        ``segmentation`` for the image size).
      image_ids: one int per scene; default ``1..N``.

    Returns:
      ``{"info", "images", "annotations", "categories"}``: an image entry per
      scene (``id``, ``width``, ``height``, ``file_name``), an annotation per
      valid slot with ``bbox`` ``[x0, y0, x1 - x0, y1 - y0]``, ``area`` the box
      area, ``iscrowd`` 0 and ``category_id`` ``class + 1``, and the ten
      Fashion-MNIST categories (ids 1..10).
    """
    boxes = np.asarray(targets["boxes"], np.float64)
    classes = np.asarray(targets["classes"])
    valid = np.asarray(targets["valid"], bool)
    n = boxes.shape[0]
    height, width = np.shape(targets["segmentation"])[1:3]
    ids = _image_ids(image_ids, n)
    images = [{"id": i, "width": int(width), "height": int(height), "file_name": f"scene-{i}"}
              for i in ids]
    scene, slot = np.nonzero(valid)
    xywh = np.concatenate([boxes[scene, slot, :2], boxes[scene, slot, 2:] - boxes[scene, slot, :2]],
                          axis=1)
    annotations = [{"id": k + 1, "image_id": ids[s], "category_id": int(c) + 1,
                    "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                    "iscrowd": 0}
                   for k, (s, c, box) in enumerate(zip(scene, classes[scene, slot], xywh))]
    return {"info": {"description": "zylax Fashion-MNIST scenes"}, "images": images,
            "annotations": annotations, "categories": coco_categories()}


def coco_categories() -> list[dict]:
    """The COCO categories: ``{"id": c + 1, "name": CLASS_NAMES[c]}`` for each class ``c``."""
    return [{"id": c + 1, "name": name, "supercategory": "fashion"}
            for c, name in enumerate(CLASS_NAMES)]


def write_coco_json(path: str | os.PathLike, targets: dict, *, image_ids=None) -> None:
    """Writes ``coco_ground_truth(targets)`` to ``path`` as JSON, atomically."""
    text = json.dumps(coco_ground_truth(targets, image_ids=image_ids), sort_keys=True)
    archive.write_atomic(path, text.encode())


def load_coco(dataset: dict):
    """A ``pycocotools.coco.COCO`` index of a COCO dict, built without printing."""
    from pycocotools.coco import COCO  # only when detections are scored

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ---------------------------------------------------------------- checks


def _checked_items(items, item_labels) -> np.ndarray:
    """Items as uint8 ``(M, L, L)``, after checking them and their labels."""
    items = np.asarray(items)
    if items.ndim == 4 and items.shape[-1] == 1:
        items = items[..., 0]
    if items.ndim != 3 or items.shape[1] != items.shape[2] or items.dtype != np.uint8:
        raise ValueError(f"items must be uint8 (M, L, L) or (M, L, L, 1), got {items.dtype} "
                         f"{items.shape}")
    labels = np.asarray(item_labels)
    if items.shape[0] < 1 or labels.shape != (items.shape[0],):
        raise ValueError(f"need at least one item and one label per item, got {items.shape[0]} "
                         f"items and labels of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"item labels must be in [0, {NUM_CLASSES}), got {labels.min()}.."
                         f"{labels.max()}")
    return items


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Settings:
    """``generate``'s composition settings, checked once on creation."""

    size: int
    max_items: int
    min_items: int
    item_sizes: tuple[int, int]
    max_overlap: float
    threshold: int
    min_visible: float

    def __post_init__(self):
        if not 1 <= self.size <= 4096:
            raise ValueError(f"size must be in 1..4096, got {self.size}")
        if not 1 <= self.max_items <= 127:
            raise ValueError(f"max_items must be in 1..127, got {self.max_items}")
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"min_items must be in 1..max_items={self.max_items}, "
                             f"got {self.min_items}")
        sizes = self.item_sizes
        if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1] <= self.size:
            raise ValueError(f"item_sizes must be (smallest, largest) with 1 <= smallest <= "
                             f"largest <= size={self.size}, got {self.item_sizes}")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"max_overlap must be in [0, 1], got {self.max_overlap}")
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold must be in 0..254, got {self.threshold}")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {self.min_visible}")


def _image_ids(image_ids, n: int) -> list[int]:
    if image_ids is None:
        return list(range(1, n + 1))
    ids = [int(i) for i in image_ids]
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"image_ids must be {n} distinct integers, got {len(ids)} "
                         f"({len(set(ids))} distinct)")
    return ids


# ---------------------------------------------------------------- layout


def _foreground_boxes(items: np.ndarray, threshold: int) -> np.ndarray:
    """(M, 4) int ``(x0, y0, x1, y1)`` of each item's pixels above threshold; zeros if none."""
    fg = items > threshold
    return np.stack([*_extent(fg.any(1)), *_extent(fg.any(2))], axis=1)[:, [0, 2, 1, 3]]


def _extent(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and last index + 1 of True along the last axis (0, 0 where none)."""
    length = hit.shape[-1]
    some = hit.any(-1)
    start = np.where(some, hit.argmax(-1), 0)
    stop = np.where(some, length - hit[..., ::-1].argmax(-1), 0)
    return start, stop


def _draw(rng: np.random.Generator, n: int, item_boxes: np.ndarray, item_side: int,
          settings: _Settings) -> dict:
    """Random items, sides and places for ``n`` scenes; ``active`` marks the placed slots.

    ``item_boxes`` holds each item's foreground box at its original side ``item_side``.
    """
    k = settings.max_items
    lo, hi = settings.item_sizes
    count = rng.integers(settings.min_items, k + 1, n)
    source = rng.integers(0, item_boxes.shape[0], (n, k))
    side = rng.integers(lo, hi + 1, (n, k))
    spots = rng.random((n, k, PLACEMENT_TRIES, 2))
    corner = np.floor(spots * (settings.size - side + 1)[..., None, None]).astype(np.int64)
    scaled = _scaled_boxes(item_boxes[source], side, item_side)
    layout = {"source": source, "side": side, "corner": np.zeros((n, k, 2), np.int64),
              "active": np.zeros((n, k), bool)}
    placed = np.zeros((n, k, 4))
    for j in range(k):
        candidates = scaled[:, j, None, :] + np.tile(corner[:, j], 2)        # (n, T, 4)
        ok = _overlap_ok(candidates, placed[:, :j], layout["active"][:, :j],
                         settings.max_overlap)
        first = ok.argmax(1)
        layout["active"][:, j] = ok.any(1) & (j < count)
        layout["corner"][:, j] = corner[np.arange(n), j, first]
        placed[:, j] = candidates[np.arange(n), first]
    return _compact(layout)


def _scaled_boxes(item_boxes: np.ndarray, side: np.ndarray, item_side: int) -> np.ndarray:
    """Item foreground boxes at the resized side (floor starts, ceil ends), item-relative."""
    scale = (side / item_side)[..., None]
    starts, stops = item_boxes[..., :2] * scale, item_boxes[..., 2:] * scale
    return np.concatenate([np.floor(starts), np.ceil(stops)], axis=-1)


def _overlap_ok(candidates: np.ndarray, placed: np.ndarray, active: np.ndarray,
                max_overlap: float) -> np.ndarray:
    """(n, T) whether each candidate box overlaps every active placed box little enough."""
    c, p = candidates[:, :, None, :], placed[:, None, :, :]
    sides = np.minimum(c[..., 2:], p[..., 2:]) - np.maximum(c[..., :2], p[..., :2])
    inter = np.clip(sides, 0, None).prod(-1)
    smaller = np.minimum(_area(c), _area(p))
    return ((inter <= max_overlap * smaller) | ~active[:, None, :]).all(-1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _compact(layout: dict) -> dict:
    """Moves each scene's active slots to the front, keeping their paste order."""
    order = np.argsort(~layout["active"], axis=1, kind="stable")
    return {key: np.take_along_axis(value, order.reshape(order.shape + (1,) * (value.ndim - 2)),
                                    axis=1)
            for key, value in layout.items()}


def _subset(layout: dict, rows: np.ndarray) -> dict:
    return {key: value[rows] for key, value in layout.items()}


# ---------------------------------------------------------------- painting


def _chunk(rng: np.random.Generator, n: int, items: np.ndarray, item_boxes: np.ndarray,
           settings: _Settings) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image, owner map and layout of ``n`` scenes, each holding at least ``min_items`` items."""
    layout = _draw(rng, n, item_boxes, items.shape[1], settings)
    image, owner, layout = _settle(items, layout, settings)
    for _ in range(MAX_REDRAWS):
        short = np.flatnonzero(layout["active"].sum(1) < settings.min_items)
        if short.size == 0:
            return image, owner, layout
        redrawn = _draw(rng, short.size, item_boxes, items.shape[1], settings)
        image[short], owner[short], redrawn = _settle(items, redrawn, settings)
        for key, value in redrawn.items():
            layout[key][short] = value
    raise ValueError(f"could not fit min_items={settings.min_items} items into "
                     f"{short.size} scenes in {MAX_REDRAWS} draws; lower min_items, "
                     f"item_sizes or min_visible, or raise max_overlap or size")


def _settle(items: np.ndarray, layout: dict, settings: _Settings
            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Paints the scenes, removes items too covered to stay, repaints the scenes that lost one."""
    image, owner, foreground = _paint(items, layout, settings)
    keep = _visible_enough(owner, foreground, layout["active"], settings.min_visible)
    changed = np.flatnonzero((keep != layout["active"]).any(1))
    if changed.size:
        layout = _compact({**layout, "active": keep})
        image[changed], owner[changed], _ = _paint(items, _subset(layout, changed), settings)
    return image, owner, layout


def _paint(items: np.ndarray, layout: dict, settings: _Settings
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composites the active slots in order.

    Returns the image uint8 ``(n, S, S)``, the owner map int8 ``(n, S, S)``
    (the slot whose visible pixel it is, -1 for background) and each slot's
    foreground pixel count ``(n, K)``.
    """
    n, k = layout["active"].shape
    size, threshold = settings.size, settings.threshold
    image = np.zeros((n, size, size), np.uint8)
    owner = np.full((n, size, size), -1, np.int8)
    foreground = np.zeros((n, k), np.int64)
    for j in range(k):
        side = layout["side"][:, j]
        for s in np.unique(side[layout["active"][:, j]]):
            rows = np.flatnonzero(layout["active"][:, j] & (side == s))
            patch = _resize(items[layout["source"][rows, j]], int(s))
            fg = patch > threshold
            foreground[rows, j] = fg.sum((1, 2))
            x, y = layout["corner"][rows, j, 0], layout["corner"][rows, j, 1]
            image_at, owner_at = _windows(image, int(s)), _windows(owner, int(s))
            image_at[rows, y, x] = np.where(fg, patch, np.maximum(image_at[rows, y, x], patch))
            owner_at[rows, y, x] = np.where(fg, np.int8(j), owner_at[rows, y, x])
    return image, owner, foreground


def _windows(canvas: np.ndarray, side: int) -> np.ndarray:
    """A writeable ``(n, S - side + 1, S - side + 1, side, side)`` view of every square window."""
    n, height, width = canvas.shape
    s0, s1, s2 = canvas.strides
    return np.lib.stride_tricks.as_strided(
        canvas, (n, height - side + 1, width - side + 1, side, side), (s0, s1, s2, s1, s2))


def _visible_enough(owner: np.ndarray, foreground: np.ndarray, active: np.ndarray,
                    min_visible: float) -> np.ndarray:
    """(n, K) active slots with visible pixels, at least ``min_visible`` of their foreground."""
    visible = np.stack([(owner == j).sum((1, 2)) for j in range(active.shape[1])], axis=1)
    return active & (visible > 0) & (visible >= min_visible * foreground)


@functools.cache
def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) float32 triangle-filter weights: bilinear up, area-like (antialiased) down."""
    scale = src / dst
    centers = (np.arange(dst) + 0.5) * scale - 0.5
    weights = np.maximum(0.0, 1 - np.abs(np.arange(src) - centers[:, None]) / max(scale, 1.0))
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def _resize(patches: np.ndarray, side: int) -> np.ndarray:
    """uint8 ``(r, L, L)`` -> uint8 ``(r, side, side)``, separable and vectorised."""
    m = _resize_matrix(patches.shape[1], side)
    out = m @ patches.astype(np.float32) @ m.T
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- targets


def _empty_targets(n: int, size: int, k: int) -> dict:
    return {"boxes": np.zeros((n, k, 4), np.float32), "classes": np.zeros((n, k), np.int32),
            "valid": np.zeros((n, k), bool), "segmentation": np.zeros((n, size, size), np.uint8),
            "instances": np.zeros((n, size, size), np.uint8),
            "source": np.full((n, k), -1, np.int32)}


def _targets(owner: np.ndarray, layout: dict, labels: np.ndarray) -> dict:
    """Boxes, classes, validity, segmentation, instances and sources from the owner map."""
    active = layout["active"]
    classes = np.where(active, labels[layout["source"]], 0).astype(np.int32)
    boxes = np.zeros(active.shape + (4,), np.float32)
    segmentation = np.zeros(owner.shape, np.uint8)
    for j in range(active.shape[1]):
        mine = owner == j
        x0, x1 = _extent(mine.any(1))
        y0, y1 = _extent(mine.any(2))
        boxes[:, j] = np.stack([x0, y0, x1, y1], axis=1)
        np.copyto(segmentation, (classes[:, j, None, None] + 1).astype(np.uint8), where=mine)
    return {"boxes": boxes, "classes": classes, "valid": active.copy(),
            "segmentation": segmentation, "instances": (owner + 1).view(np.uint8),
            "source": np.where(active, layout["source"], -1).astype(np.int32)}


# the 60,000 train and 10,000 test scenes; the normalisation of the 60,000 train scenes
data.register(data.Dataset("fashion_mnist_scenes",
                           lambda split, download: load(split, download=download),
                           (0.0928,), (0.2347,), (96, 96, 1), labels="scenes",
                           num_classes=NUM_CLASSES))
