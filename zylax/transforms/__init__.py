"""Pure functions over parameter pytrees, one method per module."""

from zylax.transforms import (binary, huffman, order, packing, pattern, pruning, sharing, sparse,
                              ternary, tree)

__all__ = ["binary", "huffman", "order", "packing", "pattern", "pruning", "sharing", "sparse",
           "ternary", "tree"]
