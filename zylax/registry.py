"""The one registry of named nets: model factory, training recipe, compression preset.

Names are a convenience at the edge (the CLI, experiments, notebooks); the
library itself takes model objects. A user registers their own net with
``register`` or runs it from the command line with ``--model
package.module:factory``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from typing import Any, Callable, Mapping

import flax.linen as nn

from zylax import nets, tasks
from zylax.transforms import binary
from zylax.nets.deeplab import DeepLabV3Small
from zylax.nets.layers import TapConv
from zylax.nets.rescaled import Rescaled
from zylax.nets.ssdlite import SSDLiteSmall
from zylax.train import Recipe


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A named net.

    Attributes:
      factory: ``num_classes -> flax.linen.Module``.
      recipe: baseline training settings (``train.Recipe``).
      compression: the net's compression presets, as data, keyed by the chain
        they run (the first is the default): ``{spec: {"methods": spec,
        "settings": {method: {setting: value}}, "retrain": {...}, ...}}``, the
        fields of ``compress.Preset``.
      reference: published compressed sizes per report stage (e.g. Han's "P+Q+H").
      task: "classification", "detection" or "segmentation" (``zylax.tasks``).
        The factory gets the number of classes the model outputs: object
        classes for classification and detection (a detector adds its
        background), every label including the background for segmentation.
    """

    factory: Callable[[int], nn.Module]
    recipe: Recipe
    compression: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: Mapping[str, str] = dataclasses.field(default_factory=dict)
    task: str = "classification"


NETS: dict[str, NetSpec] = {}


def register(name: str, factory: Callable[[int], nn.Module], recipe: Recipe, *,
             compression: Mapping[str, Any] | None = None,
             reference: Mapping[str, str] | None = None,
             task: str = "classification") -> NetSpec:
    """Adds (or replaces) the net ``name``; returns its ``NetSpec``."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"net names are letters, digits and '_', got {name!r}")
    if task not in tasks.TASKS:
        raise ValueError(f"task must be one of {tuple(tasks.TASKS)}, got {task!r}")
    spec = NetSpec(factory, recipe, dict(compression or {}), dict(reference or {}), task)
    NETS[name] = spec
    return spec


def get(name: str) -> NetSpec:
    """The ``NetSpec`` registered as ``name``."""
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {sorted(NETS)}")
    return NETS[name]


def import_factory(spec: str) -> Callable[[int], nn.Module]:
    """``"package.module:factory"`` -> a ``num_classes -> Module`` function.

    ``factory`` may be a linen Module class or any callable; it gets
    ``num_classes=`` when its signature takes it. The module is looked up on
    ``sys.path`` plus the current folder, as ``python -m`` does.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model must look like package.module:factory, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` would find it
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as err:
        raise ValueError(f"cannot import {spec!r}: {err} (modules are looked up from the "
                         f"current folder {os.getcwd()} and PYTHONPATH)") from None
    except AttributeError as err:
        raise ValueError(f"cannot import {spec!r}: {err}") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    try:
        takes_classes = "num_classes" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes_classes = False
    return (lambda n: target(num_classes=n)) if takes_classes else (lambda n: target())


_HAN = {
    "lenet300": {"P": "8% (12x)", "P+Q": "3.1% (32x)", "P+Q+H": "2.49% (40x)"},
    "lenet5": {"P": "8% (12x)", "P+Q": "3.05% (33x)", "P+Q+H": "2.55% (39x)"},
}
"""Han et al. 2015, Tables 1-3: compressed size as % of the dense model (rate)."""

# Training recipes and compression presets: the settings measured in RESULTS.md.
_SGD = dict(learning_rate=0.05, warmup_steps=300, weight_decay=5e-4, sgd_momentum=0.9,
            label_smoothing=0.1, pad_to=32)
_SQUEEZE = Recipe(epochs=15, learning_rate=1e-3, warmup_steps=300, weight_decay=5e-2,
                  label_smoothing=0.1, pad_to=32)
_SCENES = Recipe(epochs=3, batch_size=64, learning_rate=2e-3, weight_decay=1e-4,
                 warmup_steps=300)


def _deep(prune: dict, share: dict, **run) -> dict:
    """A Deep Compression preset: ``prune`` and ``share`` settings, ``run`` the rest
    (``retrain``: ``compress.Retrain`` fields; ``fold_batch_norm``; ``unshared_dtype``)."""
    return {"deep": {"methods": "deep", "settings": {"prune": prune, "share": share}, **run}}


_BN_DEEP = _deep(
    prune=dict(sparsity={".*depthwise/kernel": 0.0, ".*classifier/kernel": 0.5,
                         ".*kernel": 0.65}, cycles=3, epochs=1),
    share=dict(bits=6, epochs=1, lr_scale=1 / 3),
    retrain=dict(learning_rate=3e-4, weight_decay=5e-5))
"""BatchNorm nets: depthwise 3x3 kernels (9 weights a channel) are not pruned."""
_HEADS_DEEP = _deep(
    prune=dict(sparsity={".*depthwise/kernel": 0.0, ".*kernel": 0.5}, schedule="cubic",
               epochs=4),
    share=dict(bits={".*depthwise/kernel": 5, ".*": 4}, epochs=1, lr_scale=1 / 3),
    retrain=dict(learning_rate=3e-4, weight_decay=5e-5), fold_batch_norm=True,
    unshared_dtype="float16")
"""Detection and segmentation heads: gradual pruning, 4-bit 1x1 kernels, BatchNorm folded
and the rest at float16."""

register("lenet300", lambda n: nets.LeNet300100(num_classes=n),
         Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4),
         compression=_deep(
             prune=dict(sparsity={".*ip1/kernel": 0.95, ".*ip2/kernel": 0.85}, cycles=4,
                        epochs=5),
             share=dict(bits=5, epochs=3, lr_scale=0.1),
             retrain=dict(learning_rate=1e-3, weight_decay=5e-4)),
         reference=_HAN["lenet300"])
register("lenet5", lambda n: nets.LeNet5(num_classes=n),
         Recipe(epochs=10, learning_rate=1e-3, weight_decay=1e-4),
         compression={**_deep(
             prune=dict(sparsity={".*conv1/kernel": 0.34, ".*conv2/kernel": 0.88,
                                  ".*ip1/kernel": 0.95}, cycles=3, epochs=2),
             share=dict(bits={".*conv.*": 8, ".*": 5}, epochs=1, lr_scale=0.1),
             retrain=dict(learning_rate=1e-3, weight_decay=5e-4)),
             "prune+ttq": {"methods": "prune+ttq",
                           "settings": {"prune": dict(sparsity={".*ip1/kernel": 0.5}, epochs=3),
                                        "ternary": dict(epochs=10)},
                           "retrain": dict(learning_rate=1e-3, weight_decay=5e-4)},
             "pattern": {"methods": "pattern", "settings": {"pattern": dict(epochs=5)},
                         "retrain": dict(learning_rate=1e-3)}},
         reference=_HAN["lenet5"])
register("mlp", lambda n: nets.MLP(num_classes=n),
         Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4))
register("bnn_mlp", lambda n: nets.MLP(num_classes=n, hidden=(2048, 2048, 2048),
                                       activation=binary.binary_activation),
         Recipe(epochs=15, learning_rate=3e-3, weight_decay=0.0),
         compression={"bnn": {"methods": "bnn",
                              "settings": {"binary": dict(scale=None, keep_float=(), epochs=5)},
                              "retrain": dict(learning_rate=3e-3),
                              "unshared_dtype": "float16"}})
register("squeezenet1_0", lambda n: nets.SqueezeNet1_0(num_classes=n, head_bias_init=1.0),
         _SQUEEZE)
register("squeezenet1_1", lambda n: nets.SqueezeNet1_1(num_classes=n, head_bias_init=1.0),
         _SQUEEZE,
         compression=_deep(
             prune=dict(sparsity={".*conv1/kernel": 0.3, ".*conv10/kernel": 0.5,
                                  ".*kernel": 0.75}, cycles=3, epochs=4),
             share=dict(bits=5, epochs=2, lr_scale=0.2, index_bits="ans"),
             retrain=dict(learning_rate=5e-4, weight_decay=5e-4), unshared_dtype="float16"))
register("mobilenet_v1", lambda n: nets.MobileNetV1(alpha=0.5, num_classes=n, conv=TapConv),
         Recipe(epochs=10, **_SGD))
register("mobilenet_v2", lambda n: nets.MobileNetV2(width_multiplier=0.5, num_classes=n,
                                                    conv=TapConv), Recipe(epochs=10, **_SGD),
         compression=_BN_DEEP)
register("sepnet", lambda n: nets.SEPNet(num_classes=n, conv=TapConv), Recipe(epochs=6, **_SGD),
         compression={
             "deep": {**_BN_DEEP["deep"], "settings": {**_BN_DEEP["deep"]["settings"], "prune": {
                 **_BN_DEEP["deep"]["settings"]["prune"],
                 "sparsity": {".*classifier/kernel": 0.5, ".*kernel": 0.65}}}},
             "pattern": {"methods": "pattern", "settings": {"pattern": dict(epochs=8)},
                         "retrain": dict(learning_rate=5e-4)},
             "pattern&share": {"methods": "pattern&share",
                               "settings": {"pattern": dict(epochs=8), "share": dict(bits=8)},
                               "retrain": dict(learning_rate=5e-4)}})
register("ssdlite_mobilenet_v2", lambda n: SSDLiteSmall(num_classes=n),
         _SCENES, compression=_HEADS_DEEP, task="detection")
register("deeplabv3_mobilenet_v2",  # a segmentation factory's n counts the background
         lambda n: DeepLabV3Small(num_classes=n),
         _SCENES, compression=_HEADS_DEEP, task="segmentation")
register("deeplabv3_mobilenet_v2_120",  # the scenes resized to 120x120 inside
         lambda n: Rescaled(DeepLabV3Small(num_classes=n), 1.25),
         _SCENES, compression=_HEADS_DEEP, task="segmentation")
