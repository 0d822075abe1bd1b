"""Pure functions over arrays and parameter pytrees: the mathematics the methods use
(pruning masks and schedules, k-means, TTQ, BNN, SEP-Net patterns), layer order and
BatchNorm folding. ``zylax.methods`` turns them into the one ``Method`` interface."""

from zylax.transforms import (batchnorm, binary, order, pattern, pruning, sharing, ternary,
                              tree)

__all__ = ["batchnorm", "binary", "order", "pattern", "pruning", "sharing", "ternary", "tree"]
