"""``soft_share``: soft weight-sharing (Ullrich, Meeds, Welling, ICLR 2017).

The weights retrain under a Gaussian-mixture prior learned with them
(``zylax.transforms.mixture``): the loss of one example gains
``tau / N * (-sum_i log p(w_i) - sum_j log Gamma(lambda_j))`` (eq. 7, the
minimum-description-length bound; ``N`` is the training set's size,
``examples``). Component 0 sits at 0 with mixing weight ``zero_mixing``, so
the prior prunes and clusters in one run. As in the paper, one mixture
serves every selected layer (its trainable arrays are kept with the first
layer's ``own``); it reads each layer's weights in units of that layer's
starting standard deviation (rounded to a power of two), so one setting fits
layers and models of any weight scale.

Training (``apply(state, rng)``, as ``train.fit`` calls it) runs the float
weights; inference (``apply(state)``: the scores, the next stage and the file)
runs each weight snapped to the mean of its most responsible component,
component 0 giving an exact zero, with an identity gradient
(``straight_through.snap``). A loop of your own adds ``method.penalty(state)``
to its loss and passes ``examples`` (or calls ``.sized(n)``). Stored by
the ``shared`` codec: the used means as the codebook, Huffman-coded indices.
The mixture trains with Adam at its own learning rates (means, log precisions,
mixing logits), as the paper's code; the weights with the run's optimizer,
their zeros kept.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax import straight_through as st
from zylax.containers import Shared
from zylax.methods.base import Method, integer_setting, latent_and_own, real_setting
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
      initial_std: every component's starting std, in units of each layer's std, in
        [1e-3, 1e3] (wider prunes more at once: RESULTS.md "Soft weight-sharing").
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
    initial_std: float = 0.1
    zero_hyper: tuple[float, float] = (5000.0, 50.0)
    hyper: tuple[float, float] = (50.0, 0.5)
    prior_learning_rates: tuple[float, float, float] = (2e-3, 3e-3, 3e-3)
    epochs: int = 10

    name: ClassVar[str] = "soft_share"
    carries: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "components",
                           integer_setting(self.name, "components", self.components, 2, 257))
        if self.examples is not None:
            object.__setattr__(self, "examples",
                               integer_setting(self.name, "examples", self.examples, 1, None))
        real_setting(self.name, "zero_mixing", self.zero_mixing, "in (0, 1)",
                     lambda v: 0.0 < v < 1.0)
        real_setting(self.name, "tau", self.tau, "finite and >= 0", lambda v: 0.0 <= v < math.inf)
        real_setting(self.name, "initial_std", self.initial_std, "in [1e-3, 1e3]",
                     lambda v: 1e-3 <= v <= 1e3)
        for field, size in (("zero_hyper", 2), ("hyper", 2), ("prior_learning_rates", 3)):
            values = getattr(self, field)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or \
                    len(values) != size:
                raise ValueError(f"soft_share: {field} must be {size} positive numbers, got "
                                 f"{values!r}")
            for value in values:
                real_setting(self.name, field, value, "positive and finite",
                             lambda v: 0.0 < v < math.inf)
            object.__setattr__(self, field, tuple(float(v) for v in values))

    def init_leaves(self, leaves, key):
        del key
        kept = {name: w != 0 for name, w in leaves.items()}
        for name, w in leaves.items():
            if ztree.is_concrete(kept[name]) and np.size(w) and not np.any(kept[name]):
                raise ValueError(f"soft_share: {name!r} has no kept weight (pruned whole); "
                                 "exclude it")
        scales = {name: power_of_two(kept_std(w, kept[name])) for name, w in leaves.items()}
        units = jnp.concatenate([(w / scales[name]).astype(jnp.float32).ravel()
                                 for name, w in leaves.items()])
        mask = jnp.concatenate([k.ravel() for k in kept.values()])
        mixture = mix.initial_mixture(units, mask, self.components, self.initial_std)
        first = next(iter(leaves))
        own = {name: dict(zip(GROUPS, mixture)) if name == first else {} for name in leaves}
        aux = {name: {"scale": scales[name], "kept": kept[name]} for name in leaves}
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
            out[name] = st.snap(w, values[picked])
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


def kept_std(w: jax.Array, kept: jax.Array) -> jax.Array:
    """The standard deviation of the ``kept`` entries of ``w`` (float32 scalar)."""
    values = w.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(kept), 1)
    mean = jnp.sum(jnp.where(kept, values, 0)) / count
    return jnp.sqrt(jnp.sum(jnp.where(kept, jnp.square(values - mean), 0)) / count)


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
