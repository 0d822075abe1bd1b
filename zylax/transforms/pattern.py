"""SEP-Net pattern binarization (Li, Wang, Lv, Yang 2017).

Only convolution kernels with spatial size ``k x k``, ``k > 1``, are binarized:
``W ~= alpha * sign(W)`` with one ``alpha = mean|W|`` per output filter (the
scale minimising ``||W - alpha B||``); 1x1 convolutions and dense layers stay
float. Fine-tuning trains ``alpha`` and the float leaves while the binary
patterns stay fixed.

Layout for ``fit(..., transform=apply, aux=patterns)``: the latent tree is the
params with each binarized kernel replaced by its ``alpha`` of shape
``(out_channels,)``; ``patterns`` maps leaf names to the fixed ``sign(W)``
(int8, +1/-1, shape of the kernel).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zylax.transforms import tree as ztree


def is_pattern_kernel(name: str, leaf) -> bool:
    """True for conv kernels ``(kh, kw, in, out)`` named ``.../kernel`` with kh, kw > 1."""
    shape = np.shape(leaf)
    return name.endswith("kernel") and len(shape) == 4 and shape[0] > 1 and shape[1] > 1


def binarize_patterns(params, include: ztree.Selector = ztree.KERNELS) -> tuple[dict, dict]:
    """Splits every k x k kernel that ``include`` selects into ``alpha`` (latent) and ``sign`` (aux).

    ``include`` (regex on the leaf path or predicate) narrows the choice, e.g.
    ``r".*pattern/kernel"`` for SEP-Net's pattern branches only; 1x1 kernels
    are never binarized. Returns ``(latent, patterns)``; raises if nothing is
    selected.
    """
    pick = ztree.selector_fn(include)
    names = ztree.selected_names(params, lambda n, leaf: is_pattern_kernel(n, leaf)
                                 and pick(n, leaf))
    ztree.check_finite(params, names)
    patterns = {}

    def split(name, w):
        if name not in names:
            return w
        patterns[name] = jnp.where(w >= 0, 1, -1).astype(jnp.int8)
        return jnp.mean(jnp.abs(w), axis=(0, 1, 2))
    return ztree.map_named(split, params), patterns


def apply(latent, patterns):
    """Dense params: ``alpha * pattern`` for binarized kernels, the leaf itself elsewhere."""
    return ztree.map_named(
        lambda name, leaf: leaf * patterns[name].astype(leaf.dtype) if name in patterns else leaf,
        latent)


def compressed(latent, patterns):
    """The params tree to store: each binarized kernel as a ``codecs.pattern.Pattern`` container.

    Decodes to exactly ``apply(latent, patterns)``.
    """
    from zylax.codecs.pattern import Pattern

    return ztree.map_named(lambda name, leaf: Pattern(np.asarray(leaf), np.asarray(patterns[name]))
                           if name in patterns else np.asarray(leaf), latent)
