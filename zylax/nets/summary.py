"""Per-layer output shapes, parameters and multiply-accumulates of a linen model.

MACs follow the MobileNet papers: one per multiply-accumulate of convolutions
(``out_h * out_w * out_c * kh * kw * in_c / groups``) and dense layers
(``in * out`` per position); BatchNorm, activations, pooling and additions
are not counted. Shapes are traced with ``jax.eval_shape``: nothing is computed.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One conv or dense layer: path, kind, output shape, parameters and MACs."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """All layers plus totals (``params`` counts every leaf of ``variables['params']``)."""

    layers: list[LayerRow]
    params: int
    macs: int

    def table(self) -> str:
        """The summary as a text table."""
        width = max(len(r.name) for r in self.layers)
        lines = [f"{'layer':{width}s}  {'kind':6s}  {'output':>18s}  {'params':>11s}  "
                 f"{'MACs':>14s}"]
        for r in self.layers:
            lines.append(f"{r.name:{width}s}  {r.kind:6s}  {str(r.output_shape):>18s}  "
                         f"{r.params:11,d}  {r.macs:14,d}")
        lines.append(f"{'total':{width}s}  {'':6s}  {'':>18s}  {self.params:11,d}  "
                     f"{self.macs:14,d}")
        return "\n".join(lines)


def _layer_row(module: nn.Module, inputs: jax.Array, output: jax.Array) -> LayerRow | None:
    if not isinstance(module, (nn.Conv, nn.Dense)):  # e.g. a block returning a tuple
        return None
    name = "/".join(module.path)
    out = tuple(int(d) for d in output.shape)
    in_features = int(inputs.shape[-1])
    if isinstance(module, nn.Conv):
        groups = module.feature_group_count
        kernel = int(np.prod(module.kernel_size))
        params = kernel * in_features // groups * module.features
        params += module.features if module.use_bias else 0
        macs = int(np.prod(out[1:])) * kernel * in_features // groups
        return LayerRow(name, "conv", out, params, macs)
    params = in_features * module.features + (module.features if module.use_bias else 0)
    macs = int(np.prod(out[1:-1], dtype=np.int64)) * in_features * module.features
    return LayerRow(name, "dense", out, params, macs)


def summary(model: nn.Module, input_shape: tuple[int, ...], *, print_table: bool = True,
            **kwargs) -> Summary:
    """Traces ``model`` on a batch of one ``input_shape`` (H, W, C) and returns its ``Summary``.

    Extra keyword arguments go to ``model.init`` (e.g. ``train=False``).
    """
    rows: list[LayerRow] = []
    active: list[nn.Module] = []  # a subclass calling super().__call__ is one layer

    def interceptor(next_fun, args, call_kwargs, context):
        nested = any(m is context.module for m in active)
        active.append(context.module)
        try:
            output = next_fun(*args, **call_kwargs)
        finally:
            active.pop()
        if context.method_name == "__call__" and not nested:
            row = _layer_row(context.module, args[0], output)
            if row is not None:
                rows.append(row)
        return output

    x = jnp.zeros((1, *input_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kwargs))
    params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
    result = Summary(rows, params, sum(r.macs for r in rows))
    if print_table:
        print(result.table())
    return result
