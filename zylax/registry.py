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

from zylax import nets
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
      compression: ``compress.Config`` fields measured for this net.
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
    if task not in ("classification", "detection", "segmentation"):
        raise ValueError(f"task must be classification, detection or segmentation, got {task!r}")
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

# Recipes and presets are the measured ones of RESULTS.md. BatchNorm nets: with
# AdamW every run overfit and stalled at 86.6-88.9% (train up to 99%); SGD with
# L2 took MobileNet V1 0.5 to 91.25%, V2 0.5 to 91.51% and SEP-Net to 90.36%.
# SqueezeNet has no BatchNorm and a ReLU on the logits: it trains gently
# (warmup, label smoothing) with conv10's bias starting at 1 so no class dies.
_SGD = dict(learning_rate=0.05, warmup_steps=300, weight_decay=5e-4, sgd_momentum=0.9,
            label_smoothing=0.1, pad_to=32)
_SQUEEZE = Recipe(epochs=15, learning_rate=1e-3, warmup_steps=300, weight_decay=5e-2,
                  label_smoothing=0.1, pad_to=32)

register("lenet300", lambda n: nets.LeNet300100(num_classes=n),
         Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4),
         compression=dict(sparsity={".*ip1/kernel": 0.95, ".*ip2/kernel": 0.85, ".*kernel": 0.0},
                          prune_cycles=4, retrain_epochs=5, retrain_lr_scale=1.0,
                          retrain_l2=5e-4, finetune_epochs=3, bits=5, index_bits="auto"),
         reference=_HAN["lenet300"])
register("lenet5", lambda n: nets.LeNet5(num_classes=n),
         Recipe(epochs=10, learning_rate=1e-3, weight_decay=1e-4),
         compression=dict(sparsity={".*conv1/kernel": 0.34, ".*conv2/kernel": 0.88,
                                    ".*ip1/kernel": 0.95, ".*kernel": 0.0},
                          prune_cycles=3, retrain_epochs=2, retrain_lr_scale=1.0,
                          retrain_l2=5e-4, finetune_epochs=1, bits={".*conv.*": 8, ".*": 5},
                          index_bits="auto"),
         reference=_HAN["lenet5"])
register("mlp", lambda n: nets.MLP(num_classes=n),
         Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4))
register("squeezenet1_0", lambda n: nets.SqueezeNet1_0(num_classes=n, head_bias_init=1.0),
         _SQUEEZE)
register("squeezenet1_1", lambda n: nets.SqueezeNet1_1(num_classes=n, head_bias_init=1.0),
         _SQUEEZE,
         compression=dict(sparsity={".*conv1/kernel": 0.3, ".*conv10/kernel": 0.5,
                                    ".*kernel": 0.7},
                          bits={".*": 6}, index_bits="auto", prune_cycles=3, retrain_epochs=2,
                          retrain_lr_scale=0.5, retrain_l2=5e-4, finetune_epochs=1))
register("mobilenet_v1", lambda n: nets.MobileNetV1(alpha=0.5, num_classes=n, conv=TapConv),
         Recipe(epochs=10, **_SGD))
# BatchNorm nets retrain with Adam at a fixed small rate (their SGD rate is 100x too high for
# Adam); depthwise 3x3 kernels (9 weights a channel) are not pruned.
_BN_COMPRESSION = dict(sparsity={".*depthwise/kernel": 0.0, ".*classifier/kernel": 0.5,
                                 ".*kernel": 0.65},
                       bits=6, index_bits="auto", prune_cycles=3, retrain_epochs=1,
                       retrain_lr=3e-4, retrain_l2=5e-5, finetune_epochs=1, finetune_lr=1e-4)
register("mobilenet_v2", lambda n: nets.MobileNetV2(width_multiplier=0.5, num_classes=n,
                                                    conv=TapConv), Recipe(epochs=10, **_SGD),
         compression=_BN_COMPRESSION)
register("sepnet", lambda n: nets.SEPNet(num_classes=n, conv=TapConv), Recipe(epochs=6, **_SGD),
         compression={**_BN_COMPRESSION, "sparsity": {".*classifier/kernel": 0.5,
                                                      ".*kernel": 0.65}})

# Detection and segmentation on 96x96 Fashion-MNIST scenes (``zylax.scenes``): the
# small configurations of the paper's heads, trained with AdamW. ``_SCENES`` is the first
# runs' recipe (3 epochs from scratch at batch 64), which the compression presets below
# retrain with. SSDLite's target is reached fastest (RESULTS.md, 41.6 min in all) from a
# pretrained trunk: ``--init-from`` it, ``--epochs 4 --batch-size 32 --augment``. DeepLabV3's
# best within the hour (mIoU 0.686 in 51 min, short of 0.70) is from the same trunk with
# ``--epochs 3 --batch-size 16 --augment --learning-rate 5e-3``.
# Pruning without retraining costs them most of their AP50 (`python -m experiments.
# settings_sweep`, 6-epoch SSDLite: 75.1% -> 32.5% at 50% sparsity, 10.0% at 60%). RESULTS.md,
# five attempts: 50% pruned gradually over 4 epochs, 4-bit 1x1 kernels (depthwise 5-bit,
# unpruned), BatchNorm folded into scale and bias and the rest at float16 gave 8.9x at -1.28
# AP50 points (over 3 epochs: -2.06; 3-bit codebooks, needed without folding, cost 1.7 points).
# The better-trained 30-epoch SSDLite loses 2.36 points to this preset; 45% over 5 mirrored
# epochs (`--sparsity 0.45 '.*depthwise/kernel=0' --gradual-epochs 5 --augment`) gives 8.5x
# at -1.72.
_BN_COMPRESSION_HEADS = {**_BN_COMPRESSION, "gradual_epochs": 4, "unshared_dtype": "float16",
                         "fold_batch_norm": True,
                         "bits": {".*depthwise/kernel": 5, ".*": 4},
                         "sparsity": {".*depthwise/kernel": 0.0, ".*kernel": 0.5}}
_SCENES = Recipe(epochs=3, batch_size=64, learning_rate=2e-3, weight_decay=1e-4,
                 warmup_steps=300)
register("ssdlite_mobilenet_v2", lambda n: SSDLiteSmall(num_classes=n),
         _SCENES, compression=_BN_COMPRESSION_HEADS, task="detection")
register("deeplabv3_mobilenet_v2",  # a segmentation factory's n counts the background
         lambda n: DeepLabV3Small(num_classes=n),
         _SCENES, compression=_BN_COMPRESSION_HEADS, task="segmentation")
# The same net on the 96x96 scenes resized to 120x120 inside (15x15 logits instead of 12x12;
# 1.56x the MACs): RESULTS.md, "DeepLabV3 at 120x120".
register("deeplabv3_mobilenet_v2_120",
         lambda n: Rescaled(DeepLabV3Small(num_classes=n), 1.25),
         _SCENES, compression=_BN_COMPRESSION_HEADS, task="segmentation")
