"""A BatchNorm MLP, the network of the BNN paper's MNIST experiments."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from zylax import straight_through as st

ModuleDef = Callable[..., nn.Module]


class MLP(nn.Module):
    """Dense -> BatchNorm -> activation per hidden layer, then Dense -> BatchNorm logits.

    Courbariaux et al. (2016) use 3 hidden layers of 2048-4096 units on MNIST;
    the default here is 3 x 1024. The input (first layer) stays real.

    Attributes:
      hidden: widths of the hidden layers.
      activation: hidden nonlinearity (``zylax.transforms.binary.binary_activation``
        for a BNN).
      stochastic_activation: if True, hidden activations are binarized by
        ``stochastic_sign`` during training (PRNG stream "dropout") and by
        ``sign`` at test time; ``activation`` is then ignored.
    """

    hidden: Sequence[int] = (1024, 1024, 1024)
    num_classes: int = 10
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    stochastic_activation: bool = False
    dense: ModuleDef = nn.Dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,  # noqa: E731
                                         epsilon=1e-4, name=name)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = norm(f"bn{i + 1}")(self.dense(width, use_bias=False, name=f"fc{i + 1}")(x))
            if self.stochastic_activation and train:
                x = st.stochastic_sign(self.make_rng("dropout"), x)
            elif self.stochastic_activation:
                x = st.sign(x)
            else:
                x = self.activation(x)
        x = self.dense(self.num_classes, use_bias=False, name="out")(x)
        return norm("bn_out")(x)
