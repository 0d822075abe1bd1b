"""``cast``: float leaves stored in a narrower float type (float16 or bfloat16).

What weight sharing and the quantizers leave float (biases, BatchNorm scales,
a float first layer) costs 4 bytes a value next to a few bits for the
quantized kernels; ``cast`` stores it at 2. Training sees the rounded values
through a straight-through rounding (``w + stop_gradient(round(w) - w)``),
so the decoded file computes what was trained; exact zeros stay zero.
``collections=True`` stores the model's other float collections (BatchNorm
statistics) in the same type. A leaf holding a value float16 cannot hold
(a running variance of 1e5) is stored as ``fallback`` (bfloat16: float32's
range). Stored by the ``cast`` codec.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax.codecs import cast as cast_codec
from zylax.methods.base import Method, latent_and_own
from zylax.transforms import pruning
from zylax.transforms import tree as ztree

DTYPES = ("float16", "bfloat16")


def _float_leaf(name: str, leaf) -> bool:
    del name
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cast(Method):
    """Narrow float storage (module docstring).

    Attributes:
      dtype: ``"float16"`` or ``"bfloat16"``.
      include: default every float leaf (what the earlier members of a
        ``combine`` left).
      collections: store the other float collections in ``dtype`` too.
      fallback: the type of a leaf ``dtype`` cannot hold (None: refused).
    """

    dtype: str = "float16"
    include: object = _float_leaf
    collections: bool = True
    fallback: str | None = "bfloat16"

    name: ClassVar[str] = "cast"

    def __post_init__(self):
        super().__post_init__()
        for value in (self.dtype, self.fallback):
            if value is not None and value not in DTYPES:
                raise ValueError(f"cast: dtype and fallback must be one of {DTYPES}, got "
                                 f"{value!r}")

    def init_leaves(self, leaves, key):
        del key
        for name, w in leaves.items():
            if jax.dtypes.finfo(w.dtype).bits > 16 and ztree.is_concrete(w):
                self._narrow(name, np.asarray(w))  # a value no type holds fails now
        return dict(leaves), {}, {}

    def _narrow(self, name: str, values: np.ndarray):
        try:
            return cast_codec.narrow(values, self.dtype, self.fallback)
        except ValueError as err:
            raise ValueError(f"cast: {name}: {err}") from None

    def apply_leaves(self, latent, own, aux, rng=None):
        del own, aux, rng
        return {name: w + jax.lax.stop_gradient(w.astype(self.dtype).astype(w.dtype) - w)
                for name, w in latent.items()}

    def leaf_tx(self, inner, steps):
        del steps
        return latent_and_own(pruning.keep_zeros(inner, min_ndim=0), optax.set_to_zero())

    def store_leaves(self, latent, own, aux):
        del own, aux
        return {name: self._narrow(name, np.asarray(w)) for name, w in latent.items()}

    def store_collections(self, collections):
        return cast_codec.narrow_floats(collections, self.dtype, self.fallback) \
            if self.collections else collections


NAME = "cast"
FACTORY = Cast
