"""Timing helpers shared by the benchmarks: median of repeats after warm-up, and tables."""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from typing import Callable

import jax

from zylax import train


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call: median, min and max over ``repeats`` timed calls."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median * 1e3:9.3f} ms [{self.low * 1e3:.3f}-{self.high * 1e3:.3f}]"


def measure(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> Timing:
    """Times ``fn()`` (blocking on JAX results) ``repeats`` times after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times))


def measure_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 11,
                        warmup: int = 3) -> dict[str, Timing]:
    """Times several functions round-robin, so slow drifts of the machine hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(statistics.median(t), min(t), max(t)) for name, t in times.items()}


def machine() -> str:
    """CPU model, core count and library versions, for BENCHMARKS.md."""
    import os

    import numpy as np
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{model}, {os.cpu_count()} cores; jax {jax.__version__}, numpy {np.__version__}, "
            f"python {platform.python_version()}")


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Prints a Markdown table (pasteable into BENCHMARKS.md)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def train_stepper(model, tx, batch: dict, *, variables=None, method=None, aux=None,
                  loss=None) -> Callable[[], object]:
    """A closure running one jitted ``train.make_train_step`` step on ``batch``.

    The state is carried from call to call; each call returns the step's loss.
    ``variables`` default to ``model.init``; ``loss`` to classification; with
    ``method`` (``zylax.methods``) the params are its latent state and ``aux``
    its constants.
    """
    mesh = train.data_mesh()
    state = train.create_state(model, tx, batch["image"][:1], variables=variables, aux=aux)
    step = train.make_train_step(model, tx, method, mesh, loss=loss)
    sharded = train.shard_batch(batch, mesh)
    holder = {"state": train.replicate(state, mesh)}

    def run():
        holder["state"], metrics = step(holder["state"], sharded)
        return metrics["loss"]
    return run

