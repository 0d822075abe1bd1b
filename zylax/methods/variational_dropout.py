"""``sparse_vd``: sparse variational dropout (Molchanov, Ashukha, Vetrov, ICML 2017).

Each selected weight has a Gaussian posterior ``q(w) = N(theta, sigma^2)`` under the
log-uniform prior, and ``alpha = sigma^2 / theta^2`` its dropout rate. The loss of one example
gains ``kl_weight / N * sum_ij KL(alpha_ij)`` (the SGVLB, eq. 3, per example; ``N`` is the
training set's size, ``examples``), with the paper's approximation (eq. 14)::

    -KL ~ k1 * sigmoid(k2 + k3 * log alpha) - 0.5 * log1p(exp(-log alpha)) - k1

Parameterised as the paper's code: ``theta`` and ``log sigma^2`` train, and ``log alpha =
clip(log sigma^2 - log theta^2, -8, 8)`` (the additive reparameterisation, which keeps the
gradient of ``theta`` small when ``alpha`` is large). Training (``apply(state, rng)``)
samples every weight once a step, ``w = theta * [log alpha < threshold] + sigma * eps``: noise
per weight and step, since the local reparameterisation (eq. 10) needs a layer's activations,
which a method over a user's params never sees; BatchNorm's statistics, gathered under that
noise, are made again for the extracted weights after the stage (``recalibrates``). Inference (``apply(state)``: the scores, the
next stage and the file) runs ``theta * [log alpha < threshold]`` (the paper's extraction,
threshold 3). ``log sigma^2`` starts at ``log theta^2 + initial_log_alpha`` (every weight at
one dropout rate, whatever its layer's scale) and trains with Adam at its own rate; ``theta``
with the run's optimizer, zeros kept. Stored as float weights with exact zeros, as ``prune``
leaves them: a later ``share`` codes them (``"svd"`` recipe: ``sparse_vd+share``). A loop of
your own adds ``method.penalty(state)`` to its loss and passes ``examples`` (or ``.sized(n)``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from zylax.methods.base import Method, integer_setting, latent_and_own, real_setting
from zylax.transforms import pruning

KL_CONSTANTS = (0.63576, 1.87320, 1.48695)
"""``k1, k2, k3`` of eq. 14 (the authors' fit)."""
LOG_ALPHA_RANGE = (-8.0, 8.0)
"""``log alpha`` is clipped here, as in the authors' code."""
TINY = 1e-16
"""Added to ``theta^2`` under the log (a zero weight gets the largest ``log alpha``)."""


def kl_approximation(log_alpha: jax.Array) -> jax.Array:
    """``KL(q || p)`` of one weight against the log-uniform prior, eq. 14 of Molchanov et al.
    (elementwise; ``>= 0``, falling to 0 as ``log alpha`` grows)."""
    k1, k2, k3 = KL_CONSTANTS
    return k1 - k1 * jax.nn.sigmoid(k2 + k3 * log_alpha) + 0.5 * jax.nn.softplus(-log_alpha)


def log_alpha(theta: jax.Array, log_sigma2: jax.Array) -> jax.Array:
    """``clip(log sigma^2 - log theta^2, -8, 8)`` in float32, elementwise."""
    theta = theta.astype(jnp.float32)
    return jnp.clip(log_sigma2 - jnp.log(jnp.square(theta) + TINY), *LOG_ALPHA_RANGE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseVD(Method):
    """Sparse variational dropout (module docstring).

    Attributes:
      kl_weight: the KL term's weight in [0, 1e6] (the paper's 1, reached after its warm-up).
      examples: ``N``, the training set's size (the loss is per example); None until
        ``sized`` fills it (``compress.run`` does).
      threshold: weights with ``log alpha >=`` this are zero (the paper's 3).
      initial_log_alpha: every weight's starting ``log alpha``, in [-8, 8].
      log_sigma2_learning_rate: Adam's rate for ``log sigma^2``, in (0, 10].
    """

    kl_weight: float = 1.0
    examples: int | None = None
    threshold: float = 3.0
    initial_log_alpha: float = -6.0
    log_sigma2_learning_rate: float = 1e-2
    epochs: int = 10

    name: ClassVar[str] = "sparse_vd"
    carries: ClassVar[bool] = False
    recalibrates: ClassVar[bool] = True
    paper_learning_rate: ClassVar[float | None] = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if self.examples is not None:
            object.__setattr__(self, "examples",
                               integer_setting(self.name, "examples", self.examples, 1, None))
        real_setting(self.name, "kl_weight", self.kl_weight, "in [0, 1e6]",
                     lambda v: 0.0 <= v <= 1e6)
        real_setting(self.name, "threshold", self.threshold, "in [-8, 8]",
                     lambda v: LOG_ALPHA_RANGE[0] <= v <= LOG_ALPHA_RANGE[1])
        real_setting(self.name, "initial_log_alpha", self.initial_log_alpha, "in [-8, 8]",
                     lambda v: LOG_ALPHA_RANGE[0] <= v <= LOG_ALPHA_RANGE[1])
        real_setting(self.name, "log_sigma2_learning_rate", self.log_sigma2_learning_rate,
                     "in (0, 10]", lambda v: 0.0 < v <= 10.0)

    def init_leaves(self, leaves, key):
        del key
        own = {name: {"log_sigma2": jnp.log(jnp.square(w.astype(jnp.float32)) + TINY)
                      + self.initial_log_alpha} for name, w in leaves.items()}
        aux = {name: {"kept": w != 0} for name, w in leaves.items()}
        return dict(leaves), own, aux

    def _extracted(self, theta, own):
        """``(theta * [log alpha < threshold], [log alpha < threshold])``."""
        kept = log_alpha(theta, own["log_sigma2"]) < self.threshold
        return jnp.where(kept, theta, jnp.zeros_like(theta)), kept

    def apply_leaves(self, latent, own, aux, rng=None):
        out = {}
        for i, (name, theta) in enumerate(latent.items()):
            mean, kept = self._extracted(theta, own[name])
            if rng is not None:
                sigma = jnp.exp(0.5 * own[name]["log_sigma2"])
                eps = jax.random.normal(jax.random.fold_in(rng, i), theta.shape, jnp.float32)
                noise = jnp.where(kept & aux[name]["kept"], sigma * eps, 0.0)
                mean = (mean.astype(jnp.float32) + noise).astype(theta.dtype)
            out[name] = mean
        return out

    def penalty_leaves(self, latent, own, aux):
        if self.examples is None:
            raise ValueError("sparse_vd: examples (the training set's size) is None; pass "
                             "it, or call .sized(n) (compress.run does)")
        total = jnp.zeros((), jnp.float32)
        for name, theta in latent.items():
            kl = kl_approximation(log_alpha(theta, own[name]["log_sigma2"]))
            total = total + jnp.sum(jnp.where(aux[name]["kept"], kl, 0.0))
        return self.kl_weight / self.examples * total

    def leaf_tx(self, inner, steps):
        del steps
        return latent_and_own(pruning.keep_zeros(inner, min_ndim=0),
                              optax.adam(self.log_sigma2_learning_rate))

    def store_leaves(self, latent, own, aux):
        del aux
        return {name: jax.device_get(self._extracted(theta, own[name])[0])
                for name, theta in latent.items()}


NAME = "sparse_vd"
FACTORY = SparseVD
