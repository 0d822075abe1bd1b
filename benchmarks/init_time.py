"""First-call time of ``model.init``: op by op (eager) against one jitted program.

Run: python -m benchmarks.init_time [NET ...]   (default: mobilenet_v2 sepnet ssdlite_mobilenet_v2)
Each registered net is initialised once jitted, as ``train.init_variables``
does, then once eagerly, in the same process (the jitted call goes first, so
the eager one profits from anything it warmed). Both give the same values
(checked); the ratio is eager / jitted wall time.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from zylax import registry, train

INPUTS = {"ssdlite_mobilenet_v2": (96, 96, 1), "deeplabv3_mobilenet_v2": (96, 96, 1)}


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def row(name: str) -> list[str]:
    """``[net, jitted s, eager s, ratio]`` of one registered net."""
    model = registry.get(name).factory(10)
    x = jnp.zeros((1, *INPUTS.get(name, (32, 32, 1))), jnp.float32)
    jitted, ours = _seconds(lambda: train.init_variables(model, x, 0))
    kwargs = train.mode_kwargs(model, False)
    eager, theirs = _seconds(lambda: model.init(jax.random.key(0), x, **kwargs))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours),
                                                    jax.tree.leaves(theirs)))
    return [name, f"{jitted:.1f} s", f"{eager:.1f} s", f"{eager / jitted:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nets", nargs="*",
                        default=["mobilenet_v2", "sepnet", "ssdlite_mobilenet_v2"])
    args = parser.parse_args()
    print_table("model.init, first call: jitted (train.init_variables) vs eager",
                ["net", "jitted", "eager", "speed-up"], [row(n) for n in args.nets])


if __name__ == "__main__":
    main()
