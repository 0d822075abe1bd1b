"""``soft_share``: soft weight-sharing (Ullrich, Meeds, Welling, ICLR 2017).

The weights retrain under a Gaussian-mixture prior learned with them
(``zylax.transforms.mixture``): the loss of one example gains
``tau / N * (-sum_i log p(w_i) - sum_j log Gamma(lambda_j))`` (eq. 7, the
minimum-description-length bound; ``N`` is the training set's size,
``examples``). Component 0 sits at 0 with mixing weight ``zero_mixing``, so
the prior prunes and clusters in one run. As in the paper, one mixture
serves every selected layer (its trainable arrays are kept with the first
layer's ``own``); it reads the weights in units of their joint starting
standard deviation (rounded to a power of two), so one setting fits models
of any weight scale.

Training runs the float weights; inference (``apply`` without ``rng``, the
scores, the next stage and the file) runs each weight snapped to the mean of
its most responsible component, component 0 giving an exact zero. Stored by
the ``shared`` codec: the used means as the codebook, Huffman-coded indices.
The mixture trains with Adam at its own learning rates (means, log precisions,
mixing logits), as the paper's code; the weights with the run's optimizer,
their zeros kept.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax.containers import Shared
from zylax.methods.base import Method, latent_and_own
from zylax.transforms import mixture as mix
from zylax.transforms import pruning
from zylax.transforms import tree as ztree

GROUPS = ("means", "log_precisions", "mixing_logits")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoftShare(Method):
    """Soft weight-sharing (module docstring).

    Attributes:
      components: ``J``, the zero component included (the paper's 17 for the
        LeNets: at most 16 shared values per layer, 4-bit indices).
      zero_mixing: ``pi_0``, the fixed mixing weight of the zero component.
      tau: the prior's weight ``tau`` (eq. 7). The paper's 5e-3 is for 100
        epochs and more; zylax's 0.5 is what RESULTS.md measures in the default 10.
      examples: ``N``, the training set's size (the loss is per example); None until
        ``sized`` fills it (``compress.run`` does).
      initial_std: every component's starting std, in units of the kernels' joint
        std (wider prunes more at once: RESULTS.md "Soft weight-sharing").
      zero_hyper, hyper: the Gamma hyper-prior ``(a, b)`` on the precisions of
        component 0 and of the others, in the same units (modes at std 0.1:
        a strong hold on the zero component, a weak one on the others).
      prior_learning_rates: Adam's learning rates of the means, the log
        precisions and the mixing logits (the paper's code's, the means' rate
        per unit of std).
    """

    components: int = 17
    zero_mixing: float = 0.999
    tau: float = 0.5
    examples: int | None = None
    initial_std: float = 0.25
    zero_hyper: tuple[float, float] = (5000.0, 50.0)
    hyper: tuple[float, float] = (50.0, 0.5)
    prior_learning_rates: tuple[float, float, float] = (2e-3, 3e-3, 3e-3)
    epochs: int = 10

    name: ClassVar[str] = "soft_share"
    carries: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.components, bool) or not isinstance(self.components, int) \
                or not 2 <= self.components <= 257:
            raise ValueError(f"soft_share: components must be an integer in [2, 257], got "
                             f"{self.components!r}")
        if not 0.0 < self.zero_mixing < 1.0:
            raise ValueError(f"soft_share: zero_mixing must lie in (0, 1), got "
                             f"{self.zero_mixing!r}")
        if not 0.0 <= self.tau < float("inf"):
            raise ValueError(f"soft_share: tau must be finite and >= 0, got {self.tau!r}")
        if self.examples is not None and (isinstance(self.examples, bool) or
                                          not isinstance(self.examples, int) or
                                          self.examples < 1):
            raise ValueError(f"soft_share: examples must be an integer >= 1, got "
                             f"{self.examples!r}")
        positive = {"initial_std": (self.initial_std,), "zero_hyper": self.zero_hyper,
                    "hyper": self.hyper, "prior_learning_rates": self.prior_learning_rates}
        for field, values in positive.items():
            if not all(0.0 < float(v) < float("inf") for v in values):
                raise ValueError(f"soft_share: {field} must be positive and finite, got "
                                 f"{values!r}")
        object.__setattr__(self, "zero_hyper", tuple(self.zero_hyper))
        object.__setattr__(self, "hyper", tuple(self.hyper))
        object.__setattr__(self, "prior_learning_rates", tuple(self.prior_learning_rates))
        if len(self.zero_hyper) != 2 or len(self.hyper) != 2 or \
                len(self.prior_learning_rates) != 3:
            raise ValueError("soft_share: zero_hyper and hyper are (a, b) pairs, "
                             "prior_learning_rates three rates")

    def init_leaves(self, leaves, key):
        del key
        kept = {name: w != 0 for name, w in leaves.items()}
        for name, w in leaves.items():
            if ztree.is_concrete(kept[name]) and np.size(w) and not np.any(kept[name]):
                raise ValueError(f"soft_share: {name!r} has no kept weight (pruned whole); "
                                 "exclude it")
        values = jnp.concatenate([w.astype(jnp.float32).ravel() for w in leaves.values()])
        mask = jnp.concatenate([k.ravel() for k in kept.values()])
        count = jnp.maximum(jnp.sum(mask), 1)
        mean = jnp.sum(jnp.where(mask, values, 0)) / count
        std = jnp.sqrt(jnp.sum(jnp.where(mask, jnp.square(values - mean), 0)) / count)
        scale = power_of_two(std)
        mixture = mix.initial_mixture(values / scale, mask, self.components, self.initial_std)
        first = next(iter(leaves))
        own = {name: dict(zip(GROUPS, mixture)) if name == first else {} for name in leaves}
        aux = {name: {"scale": scale, "kept": kept[name]} for name in leaves}
        return dict(leaves), own, aux

    def _codebook_and_indices(self, w, mixture, aux):
        """``(J,)`` values in ``w``'s dtype (index 0: exact zero) and each weight's component."""
        values = (mix.all_means(mixture) * aux["scale"]).astype(w.dtype)
        picked = mix.assignments(w / aux["scale"], mixture, self.zero_mixing)
        return values, jnp.where(aux["kept"], picked, 0)

    def apply_leaves(self, latent, own, aux, rng=None):
        if rng is not None:
            return dict(latent)
        mixture = the_mixture(own)
        out = {}
        for name, w in latent.items():
            values, picked = self._codebook_and_indices(w, mixture, aux[name])
            out[name] = values[picked]
        return out

    def penalty_leaves(self, latent, own, aux):
        if self.examples is None:
            raise ValueError("soft_share: examples (the training set's size) is None; pass "
                             "it, or call .sized(n) (compress.run does)")
        mixture = the_mixture(own)
        total = mix.negative_log_hyper_prior(mixture, self.zero_hyper, self.hyper)
        for name, w in latent.items():
            total = total + mix.negative_log_prior(w / aux[name]["scale"], aux[name]["kept"],
                                                   mixture, self.zero_mixing)
        return self.tau / self.examples * total

    def leaf_tx(self, inner, steps):
        del steps
        rates = dict(zip(GROUPS, self.prior_learning_rates))
        prior_tx = optax.multi_transform(
            {g: optax.adam(rate) for g, rate in rates.items()},
            lambda own: {name: {g: g for g in groups} for name, groups in own.items()})
        return latent_and_own(pruning.keep_zeros(inner, min_ndim=0), prior_tx)

    def store_leaves(self, latent, own, aux):
        mixture = the_mixture(own)
        out = {}
        for name, w in latent.items():
            values, picked = jax.device_get(self._codebook_and_indices(w, mixture, aux[name]))
            out[name] = shared_leaf(np.asarray(values), np.asarray(picked))
        return out


def the_mixture(own: dict) -> mix.Mixture:
    """The one mixture of a ``SoftShare``'s leaves (kept with its first leaf's ``own``)."""
    return mix.Mixture(*(next(o for o in own.values() if o)[g] for g in GROUPS))


def power_of_two(std: jax.Array) -> jax.Array:
    """``std`` rounded to the nearest power of two (1 for 0): dividing by it is exact, so the
    mixture sees the same weights under ``jit`` and eagerly."""
    exponent = jnp.round(jnp.log2(jnp.where(std > 0, std, 1.0)))
    return jnp.exp2(exponent).astype(jnp.float32)


def shared_leaf(values: np.ndarray, picked: np.ndarray) -> Shared:
    """The ``Shared`` leaf of weights ``values[picked]`` (``values[0] == 0``): the distinct
    non-zero values used, in ascending order, as the codebook; index ``k`` for a zero."""
    decoded = values[picked]
    codebook = np.unique(decoded[decoded != 0])
    if codebook.size == 0:
        codebook = np.zeros(1, values.dtype)
    indices = np.where(decoded != 0, np.searchsorted(codebook, decoded), codebook.size)
    dtype = np.uint8 if codebook.size < 256 else np.uint16
    return Shared(codebook.astype(values.dtype), indices.astype(dtype), "auto")


NAME = "soft_share"
FACTORY = SoftShare
