"""``prune``: magnitude pruning (Han et al., "Learning both Weights and Connections", 2015).

Each selected layer keeps its ``1 - s`` largest magnitudes (``sparsity``, per
layer with ``{regex: s}``), or Han's rule ``|w| > quality * std(w)``
(``quality``). The pruned weights become exact zeros, and every later method
keeps them zero (``zylax.methods.base``), so pruning composes with sharing,
TTQ, BNN and the rest without passing masks around.

Schedules: ``"oneshot"`` prunes at ``init`` and retrains with the zeros kept;
``cycles=C`` runs Han's iterative prune/retrain, cycle ``c`` at
``s * (1 - (1 - c/C)^3)``; ``"cubic"`` is Zhu & Gupta's gradual pruning in one
run: the masks rise on the cubic schedule over the first 3/4 of the stage's
steps (recomputed every ``update_every`` steps), the last 1/4 trains with the
final masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax.numpy as jnp
import numpy as np
import optax

from zylax.methods.base import Method, latent_and_own
from zylax.transforms import pruning
from zylax.transforms import tree as ztree

SCHEDULES = ("oneshot", "cubic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prune(Method):
    """Magnitude pruning (module docstring).

    Attributes:
      sparsity: the fraction of each selected layer pruned, in [0, 1): one
        value, or ``{regex: s}`` (first match wins; a selected layer no
        pattern matches is not pruned; every pattern must match a layer).
        May be traced (``jax.vmap`` over it).
      quality: Han's rule instead: keep ``|w| > quality * std(w)``.
      schedule: ``"oneshot"`` or ``"cubic"`` (module docstring).
      cycles: Han's prune/retrain cycles (``stages``), each ``epochs`` long.
      update_every: steps between mask updates of ``"cubic"`` (default
        ``gradual_update_every(steps)``).
    """

    sparsity: Any = 0.5
    quality: float | None = None
    schedule: str = "oneshot"
    cycles: int = 1
    update_every: int | None = None

    name: ClassVar[str] = "prune"
    carries: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        values = self.sparsity.values() if isinstance(self.sparsity, Mapping) else [self.sparsity]
        for value in values:
            if ztree.is_concrete(value) and not 0 <= float(value) < 1:
                raise ValueError(f"prune: sparsity must lie in [0, 1), got {value!r}")
        quality = self.quality
        if quality is not None and ztree.is_concrete(quality) and not 0 <= quality < float("inf"):
            raise ValueError(f"prune: quality must be finite and >= 0, got {self.quality!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"prune: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) or self.cycles < 1:
            raise ValueError(f"prune: cycles must be an integer >= 1, got {self.cycles!r}")
        if self.cycles > 1 and self.schedule != "oneshot":
            raise ValueError("prune: cycles are one-shot prunings; the cubic schedule is one run")

    def layer_sparsity(self, name: str):
        """The sparsity of leaf ``name``: the first matching pattern's, else 0 (a dict), or
        the one value."""
        if isinstance(self.sparsity, Mapping):
            return ztree.per_leaf_value(name, 0.0, self.sparsity)
        return self.sparsity

    def stages(self) -> list[Method]:
        if self.cycles == 1:
            return [self]
        fractions = [1.0 - (1.0 - c / self.cycles) ** 3 for c in range(1, self.cycles + 1)]
        return [dataclasses.replace(self, cycles=1, sparsity=_scaled(self.sparsity, f))
                for f in fractions]

    def init_leaves(self, leaves, key):
        del key
        if self.schedule == "cubic":
            return dict(leaves), {}, {}
        latent = {}
        for name, w in leaves.items():
            if self.quality is not None:
                keep = jnp.abs(w) > self.quality * jnp.std(w)
            else:
                keep = pruning.layer_mask(w, self.layer_sparsity(name)) & (w != 0)
            if ztree.is_concrete(keep) and np.size(w) and not np.any(keep):
                raise ValueError(f"prune: these settings prune every weight of {name!r}")
            latent[name] = jnp.where(keep, w, jnp.zeros_like(w))
        return latent, {}, {}

    def apply_leaves(self, latent, own, aux, rng=None):
        del own, aux, rng
        return dict(latent)

    def leaf_tx(self, inner, steps):
        if self.schedule == "oneshot":
            return latent_and_own(pruning.keep_zeros(inner, min_ndim=0), optax.set_to_zero())
        if not steps or steps < 2:
            raise ValueError(f"prune: the cubic schedule needs at least 2 steps, got {steps}")
        sparsity = (0.0, dict(self.sparsity)) if isinstance(self.sparsity, Mapping) else \
            (self.sparsity, None)
        gradual = pruning.prune(
            inner, sparsity=sparsity[0], overrides=sparsity[1], include=".*",
            schedule=lambda count: pruning.cubic_progress(count, end_step=int(0.75 * steps)),
            update_every=self.update_every or gradual_update_every(steps))
        return latent_and_own(gradual, optax.set_to_zero())

    def store_leaves(self, latent, own, aux):
        del own, aux
        return {name: np.asarray(w) for name, w in latent.items()}


def gradual_update_every(steps: int) -> int:
    """Steps between mask updates of gradual pruning: 50, or ``steps // 20`` on short runs.

    At most a twentieth of the run, so masks are recomputed after the
    schedule reaches its final sparsity at 3/4 of the ``steps``.
    """
    return max(1, min(50, steps // 20))


def _scaled(sparsity, fraction: float):
    if isinstance(sparsity, Mapping):
        return {pattern: s * fraction for pattern, s in sparsity.items()}
    return sparsity * fraction


NAME = "prune"
FACTORY = Prune
