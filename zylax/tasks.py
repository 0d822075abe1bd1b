"""What a model is trained for and how it is scored: one object per task.

A task gives the training loop its loss (``train.LossFn``) and scores a
model on test data with the task's standard metric:

* ``Classification``: softmax cross-entropy; top-1 accuracy.
* ``Detection(anchors, image_size)``: the SSD multibox loss
  (``detection.multibox_loss``); COCO mAP@[.5:.95] and AP50 through
  pycocotools on decoded, NMS-filtered boxes (``detection.postprocess``).
* ``Segmentation(num_classes)``: pixel-wise cross-entropy; mIoU and pixel
  accuracy from a confusion matrix (``metrics``).

Tasks are plain frozen dataclasses that work with any linen module whose
outputs have the task's shapes, not only zylax's nets. ``metric`` names the
number that compression keeps (``compress.run(..., task=...)``).
``to_dict``/``from_dict`` store a task in a ``.zyl`` file's metadata so that
``zylax evaluate`` scores the file the way it was trained.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zylax import data as zdata
from zylax import detection, metrics, train
from zylax.resizing import SCALE_RANGE, at_input_size, resize_dense, resize_images


@dataclasses.dataclass(frozen=True)
class Classification:
    """Integer labels (N,); the model returns logits (B, K)."""

    label_smoothing: float = 0.0
    name = "classification"
    metric = "accuracy"
    labels = "classes"
    metadata_fields = {}

    @staticmethod
    def check_model(model) -> None:
        """Any module that returns logits can classify."""

    @classmethod
    def for_model(cls, model, input_shape) -> "Classification":
        """``Classification()``."""
        return cls()

    def loss(self) -> train.LossFn:
        """``train.classification_loss(label_smoothing)``."""
        return train.classification_loss(self.label_smoothing)

    def evaluate(self, model, variables, images, labels, *, preprocess=None,
                 batch_size: int = 1000, method=None, aux=None) -> dict[str, float]:
        """``{"accuracy", "loss"}`` over every example (``train.evaluate``), in batches of
        at most ``batch_size`` (``scoring_batch_size``)."""
        batch_size = scoring_batch_size(self, model, variables, images, preprocess,
                                        batch_size, method, aux)
        return train.evaluate(model, variables, images, labels, preprocess=preprocess,
                              batch_size=batch_size, method=method, aux=aux)

    def working_values(self, output_shapes, input_shape) -> int:
        """Values one example needs while scored: its K logits."""
        return _values(output_shapes.shape)

    def check_outputs(self, outputs) -> None:
        """Refuses outputs that are not logits ``(B, K)`` (one-line ``ValueError``)."""
        shape = getattr(outputs, "shape", None)
        if shape is None or len(shape) != 2:
            got = tuple(shape) if shape is not None else type(outputs).__name__
            raise ValueError(f"a classification model must return logits (B, K); got {got}")

    def score_outputs(self, outputs, labels) -> dict[str, float]:
        """``{"accuracy"}`` of logits computed elsewhere (e.g. by LiteRT).

        ``outputs``: an iterable of logits batches (B, K) that together cover
        ``labels`` (N,) in order.
        """
        predicted = np.concatenate([np.argmax(np.asarray(o), -1) for o in _batches(outputs)])
        _check_covered(len(predicted), len(labels))
        return {"accuracy": float(np.mean(predicted == np.asarray(labels)))}

    def to_dict(self) -> dict:
        """JSON form for file metadata."""
        return {"name": self.name}


def _check_detection_outputs(outputs, num_anchors: int) -> None:
    """Refuses outputs that are not ``(class_logits (B, A, C + 1), box_deltas (B, A, 4))``."""
    ok = (isinstance(outputs, (tuple, list)) and len(outputs) == 2
          and all(getattr(o, "ndim", 0) == 3 for o in outputs)
          and outputs[0].shape[1] == num_anchors and tuple(outputs[1].shape[1:]) == (
              num_anchors, 4))
    if not ok:
        got = ([getattr(o, "shape", type(o).__name__) for o in outputs]
               if isinstance(outputs, (tuple, list)) else getattr(outputs, "shape",
                                                                  type(outputs).__name__))
        raise ValueError(f"a detection model must return (class_logits (B, {num_anchors}, C + 1), "
                         f"box_deltas (B, {num_anchors}, 4)) for its {num_anchors} anchors; "
                         f"got {got}")


@functools.lru_cache(maxsize=8)
def _inference_step(model, method, head, scales=(1.0,), flip=False):
    """The jitted ``(params, collections, aux, x) -> head(outputs)`` in inference mode.

    Per-pixel outputs (rank 4) are resized to the input size first. With
    other ``scales`` than ``(1.0,)`` or ``flip``, the outputs are
    ``multi_scale_log_probabilities`` of per-pixel logits. Cached per
    (model, method, head, scales, flip), so scoring the same model again
    (as ``compress.run`` does for each stage) reuses its compiled program.
    """
    @jax.jit
    def step(params, collections, aux, x):
        params = train.model_params(method, params, aux)

        def apply(inputs):
            return train.forward(model, params, collections, inputs, train=False)[0]
        if tuple(scales) == (1.0,) and not flip:
            return head(at_input_size(apply(x), x))
        return head(multi_scale_log_probabilities(apply, x, scales, flip))
    return step


def multi_scale_log_probabilities(apply, images, scales, flip: bool = False):
    """Per-pixel log of the class probabilities averaged over rescaled (and mirrored) inputs.

    DeepLabV3's inference on multi-scale inputs (Chen et al. 2017, Sec. 4.1:
    scales {0.5, 0.75, 1, 1.25, 1.5, 1.75}, plus left-right flipped inputs;
    "MF" in MobileNetV2's Table 7): for each scale ``s`` the images
    ``(B, H, W, C)`` are resized bilinearly to ``round(s * H) x round(s * W)``,
    ``apply`` maps them to logits ``(B, h, w, K)`` (any ``h, w``: they are
    resized bilinearly back to ``H x W``), and ``softmax`` of every view is
    averaged: ``log(1/V sum_v softmax(z_v))``, ``(B, H, W, K)``. A flipped
    view's prediction is flipped back before it is added.
    """
    h, w = images.shape[1:3]
    views = [(s, mirrored) for s in scales for mirrored in ((False, True) if flip else (False,))]
    total = 0.0
    for s, mirrored in views:
        x = images[:, :, ::-1] if mirrored else images
        logits = resize_dense(apply(resize_images(x, s)), h, w)
        probabilities = jax.nn.softmax(logits.astype(jnp.float32), -1)
        total = total + (probabilities[:, :, ::-1] if mirrored else probabilities)
    return jnp.log(total / len(views))


MAX_WORKING_VALUES = 1 << 26
"""Most values (outputs and the task's largest intermediate) one scoring batch may hold:
the batch shrinks to fit, and a model whose one example needs more is refused."""


def output_shapes(model, variables, sample, method=None, aux=None):
    """The shapes of ``model``'s inference outputs on ``sample`` (traced once per model,
    method, input and variable shapes; nothing computed)."""
    trees = (variables, aux, jax.ShapeDtypeStruct(np.shape(sample), np.asarray(sample).dtype))
    leaves, structure = jax.tree.flatten(trees)
    key = (structure, tuple((tuple(np.shape(x)), str(np.asarray(x).dtype) if not hasattr(
        x, "dtype") else str(x.dtype)) for x in leaves))
    try:
        return _traced_output_shapes(model, method, key)
    except TypeError:  # an unhashable model or method: trace for this call only
        return _traced_output_shapes.__wrapped__(model, method, key)


@functools.lru_cache(maxsize=32)
def _traced_output_shapes(model, method, key):
    structure, shapes = key
    abstract = jax.tree.unflatten(structure, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    variables, aux, sample = abstract
    params, collections = train.split_variables(variables)
    return jax.eval_shape(lambda p, c, a, x: train.forward(
        model, train.model_params(method, p, a), c, x, train=False)[0],
        params, collections, aux, sample)


def scoring_batch_size(task, model, variables, images, preprocess, batch_size: int,
                       method=None, aux=None) -> int:
    """``batch_size`` lowered so that a batch needs at most ``MAX_WORKING_VALUES`` values
    (``task.working_values`` of one example)."""
    preprocess = zdata.Preprocess() if preprocess is None else preprocess
    shapes = output_shapes(model, variables, preprocess(images[:1]), method, aux)
    per_example = task.working_values(shapes, tuple(images.shape[1:]))
    return max(1, min(batch_size, MAX_WORKING_VALUES // max(per_example, 1)))


def _values(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _predictions(task, model, variables, images, labels, head, *, preprocess, batch_size,
                 method, aux, scales=(1.0,), flip=False):
    """Runs ``head(outputs)`` (jitted, inference mode) over every example; yields (batch, result).

    ``head`` must be hashable and equal across calls (a bound method or a
    module-level function) for the compiled step to be reused; ``scales`` and
    ``flip`` as in ``_inference_step``.
    """
    params, collections = train.split_variables(variables)
    batch_size = scoring_batch_size(task, model, variables, images, preprocess, batch_size,
                                    method, aux)
    try:
        step = _inference_step(model, method, head, tuple(scales), flip)
    except TypeError:  # an unhashable model or method: compile for this call only
        step = _inference_step.__wrapped__(model, method, head, tuple(scales), flip)
    for batch in zdata.batches(images, labels, batch_size, preprocess=preprocess, shuffle=False,
                               remainder="pad"):
        yield batch, jax.device_get(step(params, collections, aux, batch["image"]))


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """Scene targets (``boxes``, ``classes``, ``valid``); the model returns
    ``(class_logits (B, A, C + 1), box_deltas (B, A, 4))`` over ``anchors`` (A, 4).

    ``image_size`` is the side of the (square) model input in pixels, which
    converts between pixel boxes and the anchors' normalised coordinates.
    """

    anchors: Any
    image_size: int
    max_detections: int = 100
    name = "detection"
    metric = "AP50"
    labels = "scenes"
    metadata_fields = {"image_size": (1, 2048), "max_detections": (1, 10_000)}

    @staticmethod
    def check_model(model) -> None:
        """Refuses a model without ``anchors(image_size)`` (one-line ``ValueError``)."""
        if not callable(getattr(model, "anchors", None)):
            raise ValueError(f"a detection model needs an anchors(image_size) method returning "
                             f"(A, 4) boxes; {type(model).__name__} has none")

    @classmethod
    def for_model(cls, model, input_shape) -> "Detection":
        """The model's anchors for square inputs of side ``input_shape[0]``."""
        cls.check_model(model)
        size = int(input_shape[0])
        return cls(np.asarray(model.anchors(size)), size)

    def loss(self) -> train.LossFn:
        """``detection.multibox_loss`` over this task's anchors (model outputs checked first)."""
        anchors = jnp.asarray(self.anchors)

        def loss(outputs, targets, mask):
            _check_detection_outputs(outputs, anchors.shape[0])
            return detection.multibox_loss(outputs, targets, mask, anchors,
                                           image_size=self.image_size)
        return loss

    def working_values(self, output_shapes, input_shape) -> int:
        """Values one example needs while scored: its outputs, and non-maximum suppression's
        IoU matrix of the 200 best anchors per class (``detection.postprocess``)."""
        logits, deltas = output_shapes
        k = min(200, logits.shape[1])
        return _values(logits.shape) + _values(deltas.shape) + logits.shape[-1] * k * k

    def check_outputs(self, outputs) -> None:
        """Refuses outputs that are not ``(class_logits (B, A, C + 1), box_deltas (B, A, 4))``
        over this task's A anchors (one-line ``ValueError``)."""
        _check_detection_outputs(outputs, np.shape(self.anchors)[0])

    def predict(self, model, variables, images, labels=None, *, preprocess=None,
                batch_size: int = 250, method=None, aux=None) -> dict[str, np.ndarray]:
        """Decoded, class-wise NMS-filtered detections of every image.

        Returns ``{"boxes" (N, D, 4) xyxy pixels, "scores" (N, D), "classes" (N, D),
        "valid" (N, D)}`` with D = ``max_detections``.
        """
        labels = np.zeros(images.shape[0], np.int32) if labels is None else labels
        parts = []
        for batch, found in _predictions(self, model, variables, images, labels, self.postprocess,
                                         preprocess=preprocess, batch_size=batch_size,
                                         method=method, aux=aux):
            real = batch["mask"] > 0
            parts.append({k: np.asarray(v)[real] for k, v in found.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def postprocess(self, outputs) -> dict:
        """Decoded, class-wise NMS-filtered detections of one batch of model outputs.

        ``outputs``: ``(class_logits (B, A, C + 1), box_deltas (B, A, 4))``;
        returns the dict of ``predict`` for these B images (jittable).
        """
        _check_detection_outputs(outputs, np.shape(self.anchors)[0])
        return detection.postprocess(outputs, jnp.asarray(self.anchors),
                                     image_size=self.image_size,
                                     max_detections=self.max_detections)

    def evaluate(self, model, variables, images, labels, *, preprocess=None,
                 batch_size: int = 250, method=None, aux=None) -> dict[str, float]:
        """COCO ``{"mAP", "AP50", ...}`` of the model's detections (pycocotools)."""
        found = self.predict(model, variables, images, labels, preprocess=preprocess,
                             batch_size=batch_size, method=method, aux=aux)
        return metrics.coco_detection_metrics(labels, found)

    def score_outputs(self, outputs, labels) -> dict[str, float]:
        """COCO ``{"mAP", "AP50", ...}`` of model outputs computed elsewhere (e.g. by LiteRT).

        ``outputs``: an iterable of ``(class_logits, box_deltas)`` batches that
        together cover the scenes of ``labels`` in order.
        """
        head = jax.jit(self.postprocess)
        parts = [jax.device_get(head(tuple(jnp.asarray(o) for o in batch)))
                 for batch in _batches(outputs)]
        found = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        _check_covered(len(found["boxes"]), len(labels["boxes"]))
        return metrics.coco_detection_metrics(labels, found)

    def to_dict(self) -> dict:
        """JSON form for file metadata (anchors are rebuilt from the model)."""
        return {"name": self.name, "image_size": self.image_size,
                "max_detections": self.max_detections}


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Scene targets with ``segmentation`` (N, H, W) in ``[0, num_classes)``;
    the model returns per-pixel logits (B, h, w, num_classes), at the input
    size or any other: they are resized bilinearly to ``H x W`` for the loss
    and the scores (DeepLab upsamples its logits the same way). Logits of
    another rank or class count are refused in one line.

    ``scales`` (each in [0.1, 8]) and ``flip`` set how ``evaluate``/``confusion``
    predict: the default is one pass at the input size; e.g. ``scales=(0.5,
    0.75, 1.0, 1.25, 1.5, 1.75), flip=True`` is DeepLabV3's multi-scale,
    mirrored inference (``multi_scale_log_probabilities``). Training is not
    affected. mIoU is the mean over the labels present in the truth or the
    predictions (``metrics.mean_iou``), the background included.
    """

    num_classes: int
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    name = "segmentation"
    metric = "mIoU"
    labels = "scenes"
    metadata_fields = {"num_classes": (2, 100_000)}

    @staticmethod
    def check_model(model) -> None:
        """Refuses a model without an int ``num_classes`` (one-line ``ValueError``)."""
        if not isinstance(getattr(model, "num_classes", None), int):
            raise ValueError(f"a segmentation model needs an int num_classes attribute (every "
                             f"label, the background included); {type(model).__name__} has "
                             "none")

    @classmethod
    def for_model(cls, model, input_shape) -> "Segmentation":
        """Every label of the model (``model.num_classes``, background included)."""
        cls.check_model(model)
        return cls(int(model.num_classes))

    def __post_init__(self):
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        scales = (() if isinstance(self.scales, (str, bytes)) or not np.iterable(self.scales)
                  else tuple(self.scales))
        low, high = SCALE_RANGE
        if not scales or not all(
                isinstance(s, numbers.Real) and not isinstance(s, bool) and low <= s <= high
                for s in scales):
            raise ValueError(f"scales must be a non-empty sequence of numbers in [{low:g}, "
                             f"{high:g}], got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    def loss(self) -> train.LossFn:
        """``detection.pixel_cross_entropy`` (the model's logits checked first)."""
        def loss(logits, targets, mask):
            self._check_logits(logits)
            return detection.pixel_cross_entropy(logits, targets, mask)
        return loss

    def working_values(self, output_shapes, input_shape) -> int:
        """Values one example needs while scored: its logits, and the class scores at the
        input's size for each view (scales, mirrored), twice."""
        views = len(self.scales) * (2 if self.flip else 1)
        return _values(output_shapes.shape) + 2 * views * int(
            input_shape[0]) * int(input_shape[1]) * self.num_classes

    def check_outputs(self, outputs) -> None:
        """Refuses outputs that are not logits ``(B, h, w, num_classes)`` (one-line
        ``ValueError``)."""
        self._check_logits(outputs)

    def _check_logits(self, logits) -> None:
        """Refuses outputs that are not logits ``(B, h, w, num_classes)`` (one-line ValueError)."""
        shape = getattr(logits, "shape", None)
        if shape is None or len(shape) != 4 or shape[-1] != self.num_classes:
            got = tuple(shape) if shape is not None else type(logits).__name__
            raise ValueError(f"a segmentation model must return logits (B, H, W, "
                             f"{self.num_classes}) (every label, the background included); "
                             f"got {got}")

    def _predicted_labels(self, logits):
        """Per-pixel argmax labels (B, H, W) of checked logits (B, H, W, K)."""
        self._check_logits(logits)
        return jnp.argmax(logits, -1)

    def evaluate(self, model, variables, images, labels, *, preprocess=None,
                 batch_size: int = 250, method=None, aux=None) -> dict[str, float]:
        """``{"mIoU", "pixel_accuracy"}`` over every pixel of every image."""
        return _segmentation_scores(self.confusion(
            model, variables, images, labels, preprocess=preprocess, batch_size=batch_size,
            method=method, aux=aux))

    def confusion(self, model, variables, images, labels, *, preprocess=None,
                  batch_size: int = 250, method=None, aux=None) -> np.ndarray:
        """Pixel confusion matrix ``(K, K)`` (rows: true label, columns: predicted) of the
        model's argmax over every pixel of every image; ``metrics.class_iou`` of it gives
        the per-class IoU."""
        confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        for batch, predicted in _predictions(self, model, variables, images, labels,
                                             self._predicted_labels,
                                             preprocess=preprocess, batch_size=batch_size,
                                             method=method, aux=aux,
                                             scales=self.scales, flip=self.flip):
            confusion += self._confusion(predicted, batch["label"]["segmentation"],
                                         batch["mask"] > 0)
        return confusion

    def score_outputs(self, outputs, labels) -> dict[str, float]:
        """``{"mIoU", "pixel_accuracy"}`` of logits computed elsewhere (e.g. by LiteRT).

        ``outputs``: an iterable of logits batches (B, h, w, K) that together
        cover ``labels["segmentation"]`` (N, H, W) in order (one pass each:
        ``scales`` and ``flip`` do not apply; logits resized to ``H x W``).
        """
        confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        start, total = 0, len(labels["segmentation"])
        for logits in _batches(outputs):
            self._check_logits(np.asarray(logits))
            if start + len(logits) > total:  # more outputs than labels: refused before scoring
                _check_covered(start + len(logits), total)
            truth = labels["segmentation"][start:start + len(logits)]
            logits = resize_dense(jnp.asarray(logits), *np.shape(truth)[1:3])
            predicted = np.asarray(self._predicted_labels(logits))
            confusion += self._confusion(predicted, truth, np.ones(len(predicted), bool))
            start += len(predicted)
        _check_covered(start, len(labels["segmentation"]))
        return _segmentation_scores(confusion)

    def _confusion(self, predicted, truth, real) -> np.ndarray:
        """Confusion matrix (K, K) of the pixels of the real (unpadded) images."""
        pixels = np.broadcast_to(np.asarray(real)[:, None, None], predicted.shape)
        return np.asarray(metrics.confusion_matrix(predicted, truth, self.num_classes,
                                                   mask=pixels), np.int64)

    def to_dict(self) -> dict:
        """JSON form for file metadata."""
        return {"name": self.name, "num_classes": self.num_classes}


def _batches(outputs):
    """``outputs`` as an iterable of batches; one bare array (not a list of batches) is refused."""
    if hasattr(outputs, "shape"):
        raise ValueError(f"outputs must be an iterable of batches (e.g. a list with one array "
                         f"per batch), not one array of shape {outputs.shape}")
    return outputs


def _check_covered(outputs: int, labels: int) -> None:
    """Refuses outputs for a different number of examples than the labels."""
    if outputs != labels:
        raise ValueError(f"the outputs cover {outputs} examples, the labels {labels}")


def _segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """``{"mIoU", "pixel_accuracy"}`` of a confusion matrix."""
    return {"mIoU": float(metrics.mean_iou(confusion)),
            "pixel_accuracy": float(metrics.pixel_accuracy(confusion))}


def file_metadata(task, preprocess, images, labels, extra=None) -> dict:
    """What a ``.zyl`` file records so that ``zylax evaluate``/``export`` can use it alone.

    ``extra`` (e.g. ``{"net": ...}`` or ``{"model": "pkg.mod:factory", "data": ...}``)
    comes first; the preprocessing, the task, the class count the model was
    built with (labels for segmentation, background included) and the input
    shape (H, W, C) are always recorded.
    """
    classes = getattr(task, "num_classes", None) or zdata.num_classes(labels, task.labels)
    return {**dict(extra or {}), "preprocess": preprocess.to_dict(), "task": task.to_dict(),
            "num_classes": int(classes), "input_shape": list(np.shape(images)[1:])}


TASKS: dict[str, type] = {}
"""The registered tasks by name (``register``)."""


def register(task: type) -> type:
    """Adds the task class ``task`` under ``task.name`` (usable as a class decorator).

    A task class has ``name``, ``metric`` (the number compression keeps),
    ``labels`` (the ``data.LABEL_KINDS`` it trains on), ``metadata_fields``
    (``{field: (low, high)}``, the integer fields ``to_dict`` writes, bounded
    when a file is read), ``check_model(model)``, ``for_model(model,
    input_shape)``, and on instances ``loss()``, ``evaluate(...)``,
    ``check_outputs(outputs)``, ``score_outputs(outputs, labels)`` and
    ``to_dict()``.
    """
    missing = [a for a in ("name", "metric", "labels", "metadata_fields", "check_model",
                           "for_model", "loss", "evaluate", "check_outputs", "working_values",
                           "score_outputs", "to_dict") if not hasattr(task, a)]
    if missing:
        raise TypeError(f"a task needs {missing}")
    TASKS[task.name] = task
    return task


def get(name: str) -> type:
    """The task class registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {tuple(TASKS)}")
    return TASKS[name]


def check_model(model, name: str | None) -> None:
    """Refuses a model that lacks what task ``name`` reads from it (one-line ``ValueError``):
    ``anchors(image_size)`` for detection, an int ``num_classes`` for segmentation."""
    if name is not None:
        get(name).check_model(model)


def for_model(model, input_shape, name: str | None = None):
    """The task ``name`` for ``model`` on inputs of ``input_shape`` (H, W, C).

    ``name=None`` picks detection for a model with an ``anchors(image_size)``
    method and classification otherwise. Each task reads what it needs from
    the model (``for_model`` of its class).
    """
    if name is None:
        name = "detection" if callable(getattr(model, "anchors", None)) else "classification"
    return get(name).for_model(model, input_shape)


def from_dict(info, model, input_shape):
    """The task stored by ``to_dict`` (classification when ``info`` is None)."""
    if info is None:
        return Classification()
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        raise ValueError(f"task metadata must be a dict with a 'name', got {info!r}")
    return for_model(model, input_shape, info["name"])


def with_views(task, scales=None, flip: bool = False):
    """A segmentation task that predicts from inputs resized by each of ``scales`` (and
    mirrored with ``flip``); ``task`` itself when neither is given. ``ValueError`` for
    other tasks or bad scales."""
    if scales is None and not flip:
        return task
    if task.name != "segmentation":
        raise ValueError(f"scales and flip are for segmentation models; this one is "
                         f"{task.name}")
    return dataclasses.replace(task, scales=tuple(scales or (1.0,)), flip=flip)


register(Classification)
register(Detection)
register(Segmentation)
