"""One codec per stored method of the ``.zyl`` file.

A codec is a module in this package with:

* ``METHOD``: the name written in the file header;
* ``Leaf``: the container class a compressed tree holds for this method
  (``raw`` takes plain arrays);
* ``encode(leaf) -> {variant: (fields, sections)}``: one or more candidate
  encodings; the archive keeps the smallest. Keys ``family:value`` (e.g.
  ``gaps:5``) are the values of one tunable setting, which the archive also
  compares as one choice for the whole file (so ``"auto"`` is never larger
  than any fixed value it tries);
* ``decode(entry, sections) -> np.ndarray``: the array from the header entry
  and the codec's own sections (raises ``ValueError`` when they disagree);
* ``dense(leaf) -> np.ndarray``: the values the leaf stands for, in memory;
* ``report_row(entry) -> dict``: the Han-style size columns of one leaf;
* ``working_bytes(entry) -> int``: the memory ``decode`` needs beyond the
  array it returns (an upper bound; the archive bounds their sum before it
  decodes);
* ``LITERT_STORAGE`` and ``LITERT_EXACT``: how ``zylax.export`` stores such a
  kernel in a ``.tflite`` file with ``weights="auto"`` (``"int2"``, ``"int8"``,
  ``"float32"``) and whether its values are a sign grid stored exactly.

Modules are found by name when this package is imported, so a new method is
one new module here (and its test); nothing else is edited. The containers
they encode live in ``zylax.containers``; the entropy coding in
``zylax.coding``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

import numpy as np


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.METHOD] = module
    return found


CODECS: dict[str, ModuleType] = _discover()
"""``{method name: codec module}``."""


def by_method(method: str) -> ModuleType:
    """The codec that reads ``method``; ``KeyError`` if none does."""
    return CODECS[method]


def for_leaf(leaf: Any) -> ModuleType:
    """The codec whose ``Leaf`` class ``leaf`` is an instance of; ``raw`` for arrays."""
    for codec in CODECS.values():
        if codec.Leaf is not None and isinstance(leaf, codec.Leaf):
            return codec
    return CODECS["raw"]


def dense(leaf: Any) -> np.ndarray:
    """The dense array a (possibly compressed) leaf stands for."""
    return for_leaf(leaf).dense(leaf)


__all__ = ["CODECS", "by_method", "dense", "for_leaf"]
