"""zylax: make image models small enough to ship inside a phone app.

The public modules, loaded on first use (``import zylax`` itself stays light):

* ``zylax.methods``: every compression method behind one interface
  (``Method``: init, apply, tx, store): ``prune``, ``share``, ``ternary``,
  ``binary``, ``pattern``, ``cast``, and ``combine``;
* ``zylax.transforms``: the mathematics they use (pruning masks, k-means, TTQ,
  BNN, patterns), layer order, BatchNorm folding;
* ``zylax.straight_through``: the quantizers as ``jax.custom_vjp``;
* ``zylax.archive``: the ``.zyl`` file (``save``, ``load``); ``zylax.codecs``: one
  module per stored method; ``zylax.containers``: the compressed forms of a leaf;
  ``zylax.coding``: Huffman coding, sparse positions, bit packing; ``zylax.modelfile``: a file's metadata checked and
  the model that runs it (``load_model_file``: a file never names code to run);
* ``zylax.train``: the jitted, sharded, checkpointed loop (``fit``, ``evaluate``);
* ``zylax.compress``: one pipeline for any chain of methods on any Flax model
  (``run``); ``zylax.presets``: a named preset with the user's settings;
  ``zylax.baseline``: a model named or imported, its baseline trained and cached;
  ``zylax.sensitivity``: per-layer pruning and sharing curves (Han's Figure 6);
  ``zylax.budget``: a byte budget (or an accuracy drop) turned into per-layer
  settings from those curves, and run (``plan``, ``run``);
* ``zylax.tasks``: the task registry: classification, detection and segmentation
  (loss, inference, metric, metadata);
  ``zylax.detection``: SSD anchors, box coding, matching, loss and NMS;
  ``zylax.metrics``: COCO mAP (pycocotools) and mIoU;
* ``zylax.export``: the model as a LiteRT ``.tflite`` file (extra ``zylax[litert]``);
* ``zylax.data``: the dataset registry, preprocessing and batches; ``zylax.scenes``
  (Fashion-MNIST detection/segmentation scenes, a registered dataset),
  ``zylax.nets``, ``zylax.report``, ``zylax.registry`` (named nets);
  ``zylax.resizing``: inputs resized by a factor, per-pixel outputs back.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["archive", "baseline", "budget", "codecs", "coding", "compress", "containers", "data",
           "detection", "export", "methods", "metrics", "modelfile", "nets", "presets",
           "registry", "report", "resizing", "scenes", "sensitivity", "straight_through", "tasks",
           "train", "transforms"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"zylax.{name}")
    raise AttributeError(f"module 'zylax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
