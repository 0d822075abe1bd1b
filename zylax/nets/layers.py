"""``TapConv``: a grouped/depthwise convolution written as a sum over kernel taps.

XLA's CPU backend lowers grouped and depthwise convolutions (and their
gradients) to slow generic loops: a MobileNet training step on the 2-core CI
machine spends most of its time there. ``TapConv`` computes the same function
as ``flax.linen.Conv`` with ``feature_group_count > 1`` as

    y = sum over taps (i, j) of  shift_ij(x) . W[i, j]

where each tap is a strided slice of the padded input, offset by
``(i * dilation, j * dilation)`` (atrous convolution), followed by an
elementwise product (depthwise) or a per-group matmul (grouped). It is a
subclass of ``nn.Conv`` with the same fields and the same parameters
(``kernel (kh, kw, in/groups, out)``, ``bias``), so parameter trees,
checkpoints, transforms and ``summary`` are unchanged; ungrouped convolutions
fall through to ``nn.Conv``. Inject it with ``conv=TapConv``.

``mode_kwargs`` finds a model's training flag (``train``, ``training``,
``deterministic``, ...); ``training_mode_issues`` names the BatchNorm and
Dropout layers a training-mode call does not reach.
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp


TRAINING_FLAGS = ("train", "training", "is_training")
"""Call arguments that are True in training mode, recognised by ``mode_kwargs``."""
INFERENCE_FLAGS = ("deterministic", "eval", "inference", "use_running_average")
"""Call arguments that are True in inference mode, recognised by ``mode_kwargs``."""


KNOWN_FLAGS = (f"{', '.join(TRAINING_FLAGS)} (True in training) or "
               f"{', '.join(INFERENCE_FLAGS)} (True in inference)")
"""The flag names ``mode_kwargs`` recognises, as messages and help texts list them."""


def mode_kwargs(model, train: bool, flag: str | None = None) -> dict:
    """The keyword that puts ``model`` in training (``train=True``) or inference mode.

    ``flag`` names the argument (a leading ``!`` means it is True in
    inference, as ``deterministic`` is); by default the first argument of
    ``model.__call__`` named in ``TRAINING_FLAGS`` or ``INFERENCE_FLAGS`` is
    used. A model with none gets ``{}``: it is trained with its
    ``batch_stats`` mutable, which ``self.is_mutable_collection("batch_stats")``
    reads (``training_mode_issues`` tells when that does not reach a layer).
    """
    parameters = inspect.signature(model.__call__).parameters
    if flag is not None:
        name, inverted = flag.lstrip("!"), flag.startswith("!") or flag in INFERENCE_FLAGS
        if name not in parameters:
            raise ValueError(f"{type(model).__name__}.__call__ has no argument {name!r} "
                             f"(train_flag); it takes {list(parameters)}")
        return {name: (not train) if inverted else train}
    for name in parameters:
        if name in TRAINING_FLAGS:
            return {name: train}
        if name in INFERENCE_FLAGS:
            return {name: not train}
    return {}


def training_mode_issues(model, variables, x, flag: str | None = None,
                         mutable=("batch_stats",)) -> list[str]:
    """The BatchNorm and Dropout layers that a training-mode call of ``model`` leaves in
    inference mode (``use_running_average`` or ``deterministic`` still True).

    Traces ``model.apply(variables, x, **mode_kwargs(model, True, flag))`` once,
    with ``mutable`` collections and a dropout key, and names each such layer
    by its module path. An empty list means training reaches every one of them.
    The call is abstract (``jax.eval_shape``): nothing is computed or compiled,
    and ``variables`` and ``x`` may be ``jax.ShapeDtypeStruct``s.
    """
    found: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.BatchNorm, nn.Dropout)):
            field = "use_running_average" if isinstance(module, nn.BatchNorm) else "deterministic"
            given = kwargs.get(field, args[1] if len(args) > 1 else None)
            if getattr(module, field) if given is None else given:
                found.append("/".join(module.path) or type(module).__name__)
        return next_fun(*args, **kwargs)

    def call(variables, x):
        return model.apply(variables, x, mutable=[c for c in mutable if c in variables],
                           rngs={"dropout": jax.random.key(0)}, **mode_kwargs(model, True, flag))

    with nn.intercept_methods(record):
        jax.eval_shape(call, variables, x)  # not run op by op: that compiled each op first
    return found


def _padding_pairs(padding, sizes, kernel, strides):
    """Explicit (low, high) padding per spatial axis; ``kernel`` is the dilated extent."""
    if isinstance(padding, str):
        if padding == "VALID":
            return [(0, 0)] * len(sizes)
        if padding == "SAME":
            pairs = []
            for size, k, s in zip(sizes, kernel, strides):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                pairs.append((total // 2, total - total // 2))
            return pairs
        raise ValueError(f"TapConv does not support padding {padding!r}")
    return [tuple(p) if not isinstance(p, int) else (p, p) for p in padding]


class TapConv(nn.Conv):
    """``nn.Conv`` whose grouped/depthwise case is a sum of strided taps (fast on CPU)."""

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        groups = self.feature_group_count
        if groups == 1:
            return super().__call__(inputs)
        kernel_size = tuple(self.kernel_size)
        strides = self.strides if self.strides is not None else 1
        strides = (strides,) * len(kernel_size) if isinstance(strides, int) else tuple(strides)
        dilation = self.kernel_dilation if self.kernel_dilation is not None else 1
        dilation = (dilation,) * len(kernel_size) if isinstance(dilation, int) else tuple(dilation)
        if len(kernel_size) != 2:
            raise ValueError("TapConv supports 2-D convolutions only")
        if self.input_dilation not in (None, 1, (1, 1)):
            raise ValueError("TapConv does not support input_dilation")
        in_features = inputs.shape[-1]
        if in_features % groups or self.features % groups:
            raise ValueError(f"channels ({in_features} in, {self.features} out) must be "
                             f"divisible by feature_group_count={groups}")
        kernel = self.param("kernel", self.kernel_init,
                            (*kernel_size, in_features // groups, self.features),
                            self.param_dtype)
        kernel = kernel.astype(self.dtype or inputs.dtype)
        extent = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
        pads = _padding_pairs(self.padding, inputs.shape[1:3], extent, strides)
        x = jnp.pad(inputs, [(0, 0), *pads, (0, 0)])
        out_h = (x.shape[1] - extent[0]) // strides[0] + 1
        out_w = (x.shape[2] - extent[1]) // strides[1] + 1
        depthwise = in_features == groups and self.features == groups
        y = None
        for i in range(kernel_size[0]):
            for j in range(kernel_size[1]):
                top, left = i * dilation[0], j * dilation[1]
                tap = jax.lax.slice(
                    x, (0, top, left, 0),
                    (x.shape[0], top + (out_h - 1) * strides[0] + 1,
                     left + (out_w - 1) * strides[1] + 1, in_features),
                    (1, strides[0], strides[1], 1))
                if depthwise:
                    term = tap * kernel[i, j, 0]
                else:
                    w = kernel[i, j].reshape(in_features // groups, groups, self.features // groups)
                    grouped = tap.reshape(*tap.shape[:3], groups, in_features // groups)
                    term = jnp.einsum("nhwgc,cgd->nhwgd", grouped, w).reshape(
                        *tap.shape[:3], self.features)
                y = term if y is None else y + term
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(y.dtype)
        return y
