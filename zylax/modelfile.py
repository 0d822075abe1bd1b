"""A ``.zyl`` file as a runnable model: its metadata checked, and the model the user names.

A model file is data. Its metadata may record how it was made (``"net"``, a
registered name; ``"model"``, the ``package.module:factory`` of the user's
own model, kept as a hint), but nothing here imports or calls anything a
file names: a registered net is looked up in ``zylax.registry``, and a file
made from a user's model runs only with the model the user passes
(``load_model_file(path, model=MyNet())``, or ``--model pkg.mod:factory`` on
the command line).

Every field zylax reads from the metadata is checked by ``check_metadata``
in one place, before any model is built or any array allocated:

* ``input_shape``: ``[H, W, C]``, each side at most ``MAX_SIDE``, C at most
  ``MAX_CHANNELS``, at most ``MAX_INPUT_ELEMENTS`` values in all (a file that
  records none gets its dataset's image shape, when it names a known one);
* ``preprocess``: ``mean`` and ``std`` of one value or one per channel
  (finite in float32, magnitude at most ``MAX_PREPROCESS_VALUE``, std at
  least ``MIN_STD``), ``pad_to`` at least the image side and at most twice it,
  the padded input at most ``MAX_INPUT_ELEMENTS`` values;
* ``num_classes``: an integer in ``[1, MAX_CLASSES]``;
* ``task``: a registered task name and that task's own fields; a
  segmentation output of at most ``MAX_OUTPUT_ELEMENTS`` values;
* ``net``, ``model``, ``data``: short strings (``MAX_TEXT`` characters).

A file that breaks the schema is refused with ``archive.CorruptFileError``;
one whose stored variables do not have the collections, shapes and dtypes
the model's ``init`` gives is refused with ``ModelMismatchError``; both name
the file and the field or leaf in one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from zylax import archive, registry, tasks, train
from zylax import data as zdata
from zylax.data import Preprocess
from zylax.transforms import tree as ztree

MAX_TEXT = 200
"""Longest string field (``net``, ``model``, ``data``, task name)."""
MAX_CLASSES = 100_000
"""Largest ``num_classes``."""
MAX_SIDE = 2048
"""Largest image side of ``input_shape`` (and of ``pad_to``)."""
MAX_CHANNELS = 64
"""Largest channel count of ``input_shape``."""
MAX_INPUT_ELEMENTS = 1 << 20
"""Most values in one model input example (``H * W * C``, padded to ``pad_to``)."""
MAX_OUTPUT_ELEMENTS = 1 << 24
"""Most values in one segmentation output (``H * W * num_classes``)."""
MAX_PREPROCESS_VALUE = 1e4
"""Largest magnitude of a ``preprocess`` mean or std (images are bytes, 0..255)."""
MIN_STD = 1e-6
"""Smallest ``preprocess`` std, in the float32 the inputs are computed in."""
DEFAULT_CLASSES = 10
"""The class count of a file that records none."""

_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


class ModelMismatchError(ValueError):
    """The stored variables do not fit the model (a leaf missing, extra, or of another shape
    or dtype)."""


class ModelNeededError(ValueError):
    """The file was made from a user's model; the caller must name it (``model=``, ``--model``)."""


class DatasetNeededError(ValueError):
    """The file records no dataset zylax knows; the caller must name one (``data=``, ``--data``)."""


@dataclasses.dataclass(frozen=True)
class Metadata:
    """The checked fields of a file's metadata (None where the file records none).

    ``model`` is the factory spec the file was made from: a hint for the
    user, never imported.
    """

    net: str | None = None
    model: str | None = None
    data: str | None = None
    preprocess: Preprocess | None = None
    task: Mapping[str, Any] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    """As recorded, else the image shape of the recorded dataset."""


def _text(raw: Mapping, key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT or not _NAME.fullmatch(value):
        raise archive.CorruptFileError(f"metadata {key!r}: not a name of at most {MAX_TEXT} "
                                       f"letters, digits and '_.:-' ({repr(value)[:40]})")
    return value


def _integer(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise archive.CorruptFileError(f"metadata {what}: must be an integer in [{low}, "
                                       f"{high}], got {repr(value)[:40]}")
    return value


def _input_shape(value) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise archive.CorruptFileError(f"metadata 'input_shape': must be [H, W, C], got "
                                       f"{repr(value)[:40]}")
    h = _integer(value[0], "'input_shape' height", 1, MAX_SIDE)
    w = _integer(value[1], "'input_shape' width", 1, MAX_SIDE)
    c = _integer(value[2], "'input_shape' channels", 1, MAX_CHANNELS)
    if h * w * c > MAX_INPUT_ELEMENTS:
        raise archive.CorruptFileError(f"metadata 'input_shape': {h}x{w}x{c} holds more than "
                                       f"{MAX_INPUT_ELEMENTS:,} values")
    return h, w, c


def _vector(value, what: str, channels: int | None) -> list[float]:
    allowed = range(1, MAX_CHANNELS + 1) if channels is None else {1, channels}
    if not isinstance(value, list) or len(value) not in allowed:
        raise archive.CorruptFileError(
            f"metadata 'preprocess' {what}: must hold one value"
            f"{'' if channels is None else f' or one per channel ({channels})'}, got "
            f"{repr(value)[:40]}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise archive.CorruptFileError(f"metadata 'preprocess' {what}: must be numbers")
    with np.errstate(over="ignore"):
        try:
            applied = np.asarray([float(v) for v in value], np.float64).astype(np.float32)
        except OverflowError:
            applied = np.asarray([np.inf], np.float32)
    if not np.all(np.isfinite(applied)) or np.any(np.abs(applied) > MAX_PREPROCESS_VALUE):
        raise archive.CorruptFileError(f"metadata 'preprocess' {what}: must be finite numbers "
                                       f"of magnitude at most {MAX_PREPROCESS_VALUE:g}")
    if what == "std" and np.any(applied < MIN_STD):
        raise archive.CorruptFileError(f"metadata 'preprocess' std: must be at least "
                                       f"{MIN_STD:g} (the inputs are divided by it)")
    return [float(v) for v in applied]


def _preprocess(value, shape: tuple[int, int, int] | None) -> Preprocess | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"mean", "std", "pad_to"}:
        raise archive.CorruptFileError("metadata 'preprocess': must be an object with mean, "
                                       "std and pad_to")
    channels = None if shape is None else shape[2]
    mean = _vector(value["mean"], "mean", channels)
    std = _vector(value["std"], "std", channels)
    pad_to = value["pad_to"]
    if pad_to is not None:
        side = None if shape is None else max(shape[:2])
        low, high = (1, MAX_SIDE) if side is None else (side, min(2 * side, MAX_SIDE))
        pad_to = _integer(pad_to, "'preprocess' pad_to", low, high)
        if shape is not None and pad_to * pad_to * shape[2] > MAX_INPUT_ELEMENTS:
            raise archive.CorruptFileError(f"metadata 'preprocess' pad_to: {pad_to}x{pad_to}x"
                                           f"{shape[2]} inputs hold more than "
                                           f"{MAX_INPUT_ELEMENTS:,} values")
    try:
        return Preprocess(tuple(mean), tuple(std), pad_to)
    except ValueError as err:
        raise archive.CorruptFileError(f"metadata 'preprocess': {err}") from None


def _task(value) -> dict | None:
    if value is None:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    if not isinstance(name, str) or name not in tasks.TASKS:
        raise archive.CorruptFileError(f"metadata 'task': must name one of "
                                       f"{sorted(tasks.TASKS)}, got {repr(value)[:60]}")
    fields = tasks.TASKS[name].metadata_fields
    extra = sorted(set(value) - {"name", *fields})
    if extra:
        raise archive.CorruptFileError(f"metadata 'task': unknown {name} fields "
                                       f"{str(extra)[:60]}")
    for key, (low, high) in fields.items():
        if key in value:
            _integer(value[key], f"'task' {key}", low, high)
    return dict(value)


def check_metadata(raw: Mapping) -> Metadata:
    """The fields zylax reads from ``raw`` (a file's metadata dict), checked (module docstring).

    Other keys are the file's own and are returned nowhere. Raises
    ``archive.CorruptFileError`` (one line) for a field that breaks the schema.
    """
    if not isinstance(raw, Mapping):
        raise archive.CorruptFileError("metadata: not an object")
    recorded = _input_shape(raw.get("input_shape"))
    data = _text(raw, "data")
    known = data is not None and data in zdata.names()
    shape = recorded or (zdata.get(data).image_shape if known else None)  # its images
    classes = raw.get("num_classes")
    classes = None if classes is None else _integer(classes, "'num_classes'", 1, MAX_CLASSES)
    task = _task(raw.get("task"))
    if task is not None and task["name"] == "segmentation":
        labels = classes or DEFAULT_CLASSES  # the count the model is built with
        if task.get("num_classes", labels) != labels:
            raise archive.CorruptFileError(f"metadata 'task': {task['num_classes']} labels, but "
                                           f"the model is built for num_classes {labels}")
        if shape is not None and shape[0] * shape[1] * labels > MAX_OUTPUT_ELEMENTS:
            raise archive.CorruptFileError(f"metadata 'task': {labels} labels over "
                                           f"{shape[0]}x{shape[1]} pixels are more than "
                                           f"{MAX_OUTPUT_ELEMENTS:,} output values")
    preprocess = _preprocess(raw.get("preprocess"), shape)
    if task is not None and task["name"] != "classification" and preprocess is not None \
            and preprocess.pad_to is not None and (shape is None or preprocess.pad_to != max(
                shape[:2])):
        raise archive.CorruptFileError(f"metadata 'preprocess' pad_to: a {task['name']} "
                                       "model's outputs must cover its unpadded images")
    return Metadata(net=_text(raw, "net"), model=_text(raw, "model"), data=data,
                    preprocess=preprocess, task=task, num_classes=classes, input_shape=shape)


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A checked ``.zyl`` file with the model that runs it.

    Attributes:
      path: the file.
      variables: every stored collection, decoded (``{"params": ..., ...}``).
      header: the file's validated header (``archive``): per-leaf entries, metadata.
      metadata: the checked metadata fields (``Metadata``).
      model: the ``flax.linen`` module the variables fit (checked).
      preprocess: images -> model input, as recorded.
      input_shape: ``(H, W, C)`` of one image, as recorded (or as given).
      task: the ``zylax.tasks`` object that scores it.
    """

    path: str
    variables: dict
    header: dict
    metadata: Metadata
    model: Any
    preprocess: Preprocess
    input_shape: tuple[int, int, int]
    task: Any

    @property
    def label(self) -> str:
        """The registered net, the recorded model spec, or the model's class name."""
        return self.metadata.net or self.metadata.model or type(self.model).__name__


def _build(path: str, metadata: Metadata, model) -> nn.Module:
    """The model to run: the one given (a Module, or a ``num_classes -> Module`` factory),
    else the registered net the file names. Never anything imported from the file."""
    classes = metadata.num_classes or DEFAULT_CLASSES
    if model is None:
        if metadata.net is not None:
            if metadata.net not in registry.NETS:
                raise ModelNeededError(f"{path}: net {metadata.net!r} is not registered here; "
                                       f"pass its model (--model package.module:factory, or "
                                       f"model= in Python)")
            return registry.get(metadata.net).factory(classes)
        if metadata.model is not None:
            raise ModelNeededError(
                f"{path} was made from the model {metadata.model!r}; a file never runs code it "
                f"names: pass --model {metadata.model} (zylax) or model= (Python) if you trust "
                "that code")
        raise ModelNeededError(f"{path} names no model (metadata 'net' or 'model'); pass "
                               "--model package.module:factory (zylax) or model= (Python)")
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be a flax.linen Module or a num_classes -> Module "
                            f"factory, got {type(model).__name__}")
        model = model(classes)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model factory returned a {type(model).__name__}, not a "
                            "flax.linen Module")
    return model


def check_fit(path: str, model, variables: Mapping, sample: np.ndarray) -> None:
    """Refuses ``variables`` unless they hold exactly the leaves ``model.init`` gives for
    ``sample`` (one preprocessed input batch), each with its shape and dtype.

    Nothing is computed: ``jax.eval_shape`` traces ``init``. Raises
    ``ModelMismatchError`` naming the leaves that differ (at most three).
    """
    expected = jax.eval_shape(lambda: train.init_variables(model, sample, 0))
    ours = {k: (tuple(v.shape), np.dtype(v.dtype).name)
            for k, v in ztree.named_leaves(expected).items()}
    theirs = {k: (tuple(np.shape(v)), np.asarray(v).dtype.name)
              for k, v in ztree.named_leaves(variables).items()}
    if ours == theirs:
        return
    keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))

    def shown(entry):
        return "missing" if entry is None else f"{entry[1]}{list(entry[0])}"
    diff = ", ".join(f"{k}: file {shown(theirs.get(k))}, model {shown(ours.get(k))}"
                     for k in keys[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    raise ModelMismatchError(f"{path}: the stored variables do not fit the model ({diff}{more})")


def load_model_file(path: str | os.PathLike, *, model=None,
                    input_shape: tuple[int, int, int] | None = None,
                    max_decoded_bytes: int | None = None) -> ModelFile:
    """Reads ``path`` once, checks its metadata and variables, and returns what runs it.

    Args:
      path: a ``.zyl`` file (untrusted: nothing it names is imported).
      model: the ``flax.linen`` module the file was made from, or a factory
        ``num_classes -> Module`` given the file's class count. None: the
        registered net the file names (``zylax.registry``); a file made from
        a user's model then raises ``ModelNeededError`` quoting its spec.
      input_shape: ``(H, W, C)`` of one image when the metadata records none.
      max_decoded_bytes: the loader's bound (``archive.load``).

    Returns:
      ``ModelFile``. Raises ``archive.CorruptFileError`` for a damaged or
      hostile file, ``ModelNeededError`` when the model must be named, and
      ``ModelMismatchError`` when the variables do not fit the model.
    """
    path = os.fspath(path)
    variables, header = archive.load_with_header(path, max_decoded_bytes=max_decoded_bytes)
    if "params" not in variables:
        raise archive.CorruptFileError(f"{path}: holds no 'params' collection, so no model "
                                       f"(it holds {sorted(variables)[:4]})")
    try:
        metadata = check_metadata(header["metadata"])
    except archive.CorruptFileError as err:
        raise archive.CorruptFileError(f"{path}: {err}") from None
    if metadata.preprocess is None:
        raise archive.CorruptFileError(
            f"{path}: records no preprocessing; save it with metadata="
            "tasks.file_metadata(...) (compress.run and zylax train record it)")
    shape = metadata.input_shape or (None if input_shape is None else tuple(input_shape))
    if shape is None:
        raise archive.CorruptFileError(f"{path}: records no input_shape; pass input_shape=(H, "
                                       "W, C)")
    try:
        built = _build(path, metadata, model)
    except (ModelNeededError, TypeError):
        raise
    except Exception as err:  # noqa: BLE001 - a factory's error, for settings a file chose
        raise ModelMismatchError(f"{path}: the model cannot be built for its recorded "
                                 f"settings: {_one_line(err)}") from None
    try:
        sample = metadata.preprocess(np.zeros((1, *shape), np.uint8))
        if sample.shape[-1] != shape[-1]:
            raise ValueError(f"its preprocessing has {sample.shape[-1]} channels, the input "
                             f"{shape[-1]}")
        check_fit(path, built, variables, sample)
        task = tasks.from_dict(metadata.task, built, shape)
        outputs = tasks.output_shapes(built, variables, sample)
        task.check_outputs(outputs)
        needed = task.working_values(outputs, shape)
        if needed > tasks.MAX_WORKING_VALUES:
            raise ValueError(f"scoring one example needs {needed:,} values, more than "
                             f"{tasks.MAX_WORKING_VALUES:,}")
    except ModelMismatchError:
        raise
    except Exception as err:  # noqa: BLE001 - the model's error on the recorded shapes
        raise ModelMismatchError(f"{path}: the model does not run on the recorded input "
                                 f"{list(shape)} and task: {_one_line(err)}") from None
    return ModelFile(path, variables, header, metadata, built, metadata.preprocess, shape, task)



def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:240]}"


def scoring_data(loaded: ModelFile, data: str | None = None) -> tuple[str, tuple]:
    """``(name, (images, labels))``: the test split ``loaded`` is scored on.

    ``data`` (a dataset name) overrides the one the file records; a dataset the
    file names is read from this machine only (never downloaded). Raises
    ``DatasetNeededError`` when there is none or it is unknown, and
    ``ModelMismatchError`` when its images are not the file's input shape or
    its labels not the file's task.
    """
    name = data or loaded.metadata.data
    if name is None:
        raise DatasetNeededError(f"{loaded.path} records no dataset; name one of "
                                 f"{zdata.names()} (--data on the command line, data= in "
                                 "Python)")
    if name not in zdata.names():
        raise DatasetNeededError(f"{loaded.path}: dataset {name!r} is unknown; name one of "
                                 f"{zdata.names()} (--data on the command line, data= in "
                                 "Python)")
    dataset = zdata.get(name)
    check_scored_on(loaded, dataset)
    images, labels = dataset.load("test", download=data is not None)
    if tuple(images.shape[1:]) != loaded.input_shape:
        raise ModelMismatchError(f"{loaded.path}: made for {list(loaded.input_shape)} inputs, "
                                 f"{name} has {list(images.shape[1:])}")
    return name, (images, labels)


def check_scored_on(loaded: ModelFile, dataset: zdata.Dataset) -> None:
    """Refuses (``ModelMismatchError``), before any data is read, a file whose input shape or
    label kind is not ``dataset``'s, or that is built for more classes than it has
    (segmentation counts the background)."""
    if tuple(dataset.image_shape) != loaded.input_shape:
        raise ModelMismatchError(f"{loaded.path}: made for {list(loaded.input_shape)} inputs, "
                                 f"{dataset.name} has {list(dataset.image_shape)}")
    if loaded.task.labels != dataset.labels:
        raise ModelMismatchError(f"{loaded.path}: a {loaded.task.name} model cannot be scored "
                                 f"on {dataset.name} ({dataset.labels} labels)")
    expected = dataset.num_classes + (loaded.task.name == "segmentation")
    built = loaded.metadata.num_classes or DEFAULT_CLASSES
    if built > expected:
        raise ModelMismatchError(f"{loaded.path}: built for {built} classes, more than the "
                                 f"{expected} of {dataset.name}")
