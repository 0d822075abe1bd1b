"""Flax linen image models. They know nothing about compression."""

import functools

from zylax.nets.lenet import LeNet300100, LeNet5, param_count
from zylax.nets.mlp import MLP
from zylax.nets.mobilenet import MobileNetV1, MobileNetV2, make_divisible
from zylax.nets.sepnet import SEPNet
from zylax.nets.squeezenet import SqueezeNet, SqueezeNet1_0, SqueezeNet1_1
from zylax.nets.summary import Summary, summary

NETS = {
    "lenet300": LeNet300100,
    "lenet5": LeNet5,
    "mlp": MLP,
    # conv10 starts at bias 1 so no class dies behind the logit ReLU on 28-32 px images
    "squeezenet1_0": functools.partial(SqueezeNet1_0, head_bias_init=1.0),
    "squeezenet1_1": functools.partial(SqueezeNet1_1, head_bias_init=1.0),
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "sepnet": SEPNet,
}


def get(name: str, num_classes: int = 10):
    """Builds the registered net ``name`` (see ``NETS``) for ``num_classes`` classes."""
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {sorted(NETS)}")
    return NETS[name](num_classes=num_classes)


__all__ = ["LeNet300100", "LeNet5", "MLP", "MobileNetV1", "MobileNetV2", "NETS", "SEPNet",
           "SqueezeNet", "SqueezeNet1_0", "SqueezeNet1_1", "Summary", "get", "make_divisible",
           "param_count", "summary"]
