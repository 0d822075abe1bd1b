"""Straight-through estimators: non-differentiable quantizers as ``jax.custom_vjp``."""
