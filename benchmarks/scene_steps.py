"""Training throughput of the scene nets by batch size and output stride.

Run: python -m benchmarks.scene_steps [--repeats 7] [--sizes 32 64 128]
Times jitted AdamW training steps (``train.make_train_step`` with the task's
loss) on real scenes, round-robin (``measure_interleaved``), and prints
scenes per second with the ratio to a baseline from the same run (by
default):
  SSDLiteSmall at batch 32 and 128 against batch 64 (the registry's recipe);
  DeepLabV3Small at batch 32 against 64, and at output stride 16 against 8
  (the same parameters; ``experiments/deeplab_os16.py``).
On a CPU whose throughput does not grow with the batch, batch 32 gives
twice the updates of batch 64 in the same time (RESULTS.md, "SSDLite to
its target in 42 minutes").
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from benchmarks.common import measure_interleaved, print_table, train_stepper
from zylax import data, tasks
from zylax.nets import DeepLabV3Small, SSDLiteSmall


def _stepper(model, task, images, targets, batch_size: int):
    """``train_stepper`` of ``model`` and ``task``'s loss on the first ``batch_size`` scenes."""
    batch = next(data.batches(images[:batch_size], data.take(targets, np.arange(batch_size)),
                              batch_size, preprocess=data.preprocessing("fashion_mnist_scenes")))
    return train_stepper(model, optax.adamw(1e-3), batch, loss=task.loss())


def run(repeats: int = 7, sizes: tuple[int, ...] = (32, 64, 128)) -> dict:
    """Times every configuration; returns ``{name: Timing}`` (seconds per step)."""
    images, targets = data.load("fashion_mnist_scenes", "test")
    ssd = SSDLiteSmall(num_classes=10)
    detect = tasks.Detection(np.asarray(ssd.anchors(96)), 96)
    segment = tasks.Segmentation(11)
    base = sizes[len(sizes) // 2]
    steppers = {f"SSDLite, batch {b}": _stepper(ssd, detect, images, targets, b) for b in sizes}
    for b in (sizes[0], base):
        steppers[f"DeepLabV3 OS 8, batch {b}"] = _stepper(DeepLabV3Small(11), segment, images,
                                                          targets, b)
    steppers[f"DeepLabV3 OS 16, batch {base}"] = _stepper(
        DeepLabV3Small(11, output_stride=16), segment, images, targets, base)
    timings = measure_interleaved(steppers, repeats=repeats, warmup=2)

    def rate(name):
        return int(name.rsplit(" ", 1)[1]) / timings[name].median

    baselines = {"SSDLite": f"SSDLite, batch {base}",
                 "DeepLabV3 OS 8": f"DeepLabV3 OS 8, batch {base}",
                 "DeepLabV3 OS 16": f"DeepLabV3 OS 8, batch {base}"}
    rows = []
    for name, timing in timings.items():
        baseline = baselines[name.rsplit(",", 1)[0]]
        rows.append([name, str(timing), f"{rate(name):.0f}", baseline,
                     f"{rate(name) / rate(baseline):.2f}x"])
    print_table("Scene training steps (AdamW, real scenes; scenes/s ratio to the baseline)",
                ["configuration", "step", "scenes/s", "baseline", "scenes/s ratio"], rows)
    jax.clear_caches()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs=3, default=(32, 64, 128),
                        help="three batch sizes; the middle one is the baseline")
    args = parser.parse_args()
    run(args.repeats, tuple(args.sizes))


if __name__ == "__main__":
    main()
