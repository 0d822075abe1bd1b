"""Flax linen image models. They know nothing about compression."""

from zylax.nets.lenet import LeNet300100, LeNet5, param_count
from zylax.nets.mlp import MLP

NETS = {
    "lenet300": LeNet300100,
    "lenet5": LeNet5,
    "mlp": MLP,
}


def get(name: str, num_classes: int = 10):
    """Builds the registered net ``name`` (see ``NETS``) for ``num_classes`` classes."""
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {sorted(NETS)}")
    return NETS[name](num_classes=num_classes)


__all__ = ["LeNet300100", "LeNet5", "MLP", "NETS", "get", "param_count"]
