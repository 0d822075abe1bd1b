"""Training settings per net: what ``zylax train`` and the experiments use."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """Baseline training settings for one net.

    ``learning_rate`` decays by cosine to zero over the run; ``pad_to`` pads
    28x28 images for nets that want 32x32 input.
    """

    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    pad_to: int | None = None

    def optimizer(self, steps: int, learning_rate: float | None = None) -> optax.GradientTransformation:
        """AdamW with cosine decay over ``steps`` (weight decay 0 gives Adam)."""
        lr = self.learning_rate if learning_rate is None else learning_rate
        return optax.adamw(optax.cosine_decay_schedule(lr, max(steps, 1)),
                           weight_decay=self.weight_decay)


RECIPES = {
    "lenet300": Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4),
    "lenet5": Recipe(epochs=10, learning_rate=1e-3, weight_decay=1e-4),
    "mlp": Recipe(epochs=20, learning_rate=1e-3, weight_decay=1e-4),
    "squeezenet1_0": Recipe(epochs=8, learning_rate=1e-3, pad_to=32),
    "squeezenet1_1": Recipe(epochs=8, learning_rate=1e-3, pad_to=32),
    "mobilenet_v1": Recipe(epochs=6, learning_rate=2e-3, weight_decay=1e-4, pad_to=32),
    "mobilenet_v2": Recipe(epochs=6, learning_rate=2e-3, weight_decay=1e-4, pad_to=32),
    "sepnet": Recipe(epochs=6, learning_rate=2e-3, weight_decay=1e-4, pad_to=32),
}


def get(net: str) -> Recipe:
    """The recipe registered for ``net``."""
    if net not in RECIPES:
        raise ValueError(f"no training recipe for net {net!r}; known: {sorted(RECIPES)}")
    return RECIPES[net]
