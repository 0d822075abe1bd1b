"""The compressed forms of one leaf, as a methods' ``store`` returns them and the archive
writes them: plain frozen dataclasses of arrays, with no behaviour.

Below both ``zylax.methods`` (which makes them) and ``zylax.codecs`` (which
encodes and decodes them; each codec checks its container), so neither
imports the other. A plain array stands for itself (the ``raw`` codec).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Shared:
    """k-means weight sharing (Han et al. 2015): ``codebook (k,)`` float, ``indices`` int in
    ``[0, k]`` shaped like the weights; decodes to ``append(codebook, 0)[indices]`` (index
    ``k``: a pruned weight). ``index_bits`` is the gap width of the sparse form (int,
    ``"auto"`` for the smallest file, None for Han's 8 conv / 5 dense), or ``"ans"``: the
    smallest of ``"auto"``'s files and ANS-coded masks (``zylax.codecs.shared``)."""

    codebook: Any
    indices: Any
    index_bits: int | str | None = None


@dataclasses.dataclass(frozen=True)
class Ternary:
    """TTQ (Zhu et al. 2017): ``codes`` in {-1, 0, +1} shaped like the layer and the scales
    ``w_pos``, ``w_neg`` > 0, scalars or one per output channel (last axis); decodes to
    ``w_pos`` / 0 / ``-w_neg`` per code."""

    codes: Any
    w_pos: Any
    w_neg: Any


@dataclasses.dataclass(frozen=True)
class Binary:
    """BNN weights (Courbariaux et al. 2016): ``signs`` +1/-1 of the layer's shape and
    ``scale``, a scalar or ``(out,)``; decodes to ``scale * signs``."""

    signs: Any
    scale: Any


@dataclasses.dataclass(frozen=True)
class Pattern:
    """SEP-Net (Li et al. 2017): ``scale (out,)`` float and ``signs`` +1/-1 shaped like the
    k x k kernel (last axis ``out``); decodes to ``scale * signs``."""

    scale: Any
    signs: Any


@dataclasses.dataclass(frozen=True)
class Cast:
    """``values`` (any float array; its dtype is the decoded one) kept as ``stored``, a float
    dtype name ("float16", "bfloat16"); decodes to ``values.astype(stored).astype(values.dtype)``."""

    values: Any
    stored: str


@dataclasses.dataclass(frozen=True)
class Constant:
    """``shape`` elements of dtype ``dtype`` (a float dtype name), all equal to ``value``."""

    value: float
    shape: tuple
    dtype: str


__all__ = ["Binary", "Cast", "Constant", "Pattern", "Shared", "Ternary"]
