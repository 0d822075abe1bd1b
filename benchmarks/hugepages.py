"""Scene training steps with and without glibc's huge-page malloc (``zylax.hugepages``).

Run: python -m benchmarks.hugepages [--steps 40]
glibc reads ``GLIBC_TUNABLES`` only at process start, so each configuration
runs in its own Python process, alternating, twice: the same jitted AdamW
step on the same real scenes (DeepLabV3Small at batch 16, SSDLiteSmall at
batch 32, the batch sizes of RESULTS.md's fast paths) with the environment
as it is minus any ``GLIBC_TUNABLES`` (the baseline) and with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``. It prints ms a step, the cores
spent in user and kernel time, the minor page faults a step, and the step
rate's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.common import print_table

NETS = {"DeepLabV3Small": 16, "SSDLiteSmall": 32}


def child(net: str, steps: int) -> dict:
    """Times ``steps`` training steps of ``net`` in this process (after 3 warm-up steps)."""
    import jax
    import numpy as np

    from benchmarks.scene_steps import _stepper
    from zylax import data, tasks
    from zylax.nets import DeepLabV3Small, SSDLiteSmall

    images, targets = data.load("fashion_mnist_scenes", "test")
    if net == "DeepLabV3Small":
        model, task = DeepLabV3Small(11), tasks.Segmentation(11)
    else:
        model = SSDLiteSmall(num_classes=10)
        task = tasks.Detection(np.asarray(model.anchors(96)), 96)
    step = _stepper(model, task, images, targets, NETS[net])
    for _ in range(3):
        jax.block_until_ready(step())
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(step())
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"step_s": seconds / steps, "user_cores": (after.ru_utime - before.ru_utime) / seconds,
            "kernel_cores": (after.ru_stime - before.ru_stime) / seconds,
            "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps}


def _measure(net: str, steps: int, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    out = subprocess.run([sys.executable, "-m", "benchmarks.hugepages", "--child", net,
                          "--steps", str(steps)], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(steps: int = 40, rounds: int = 2) -> dict:
    """``{(net, tuned): [child results]}``, alternating baseline and tuned runs."""
    results: dict = {}
    for _ in range(rounds):
        for net in NETS:
            for tuned in (False, True):
                results.setdefault((net, tuned), []).append(_measure(net, steps, tuned))
    rows = []
    for (net, tuned), runs in results.items():
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        base = statistics.median(r["step_s"] for r in results[(net, False)])
        rows.append([f"{net}, batch {NETS[net]}", "hugetlb=1" if tuned else "default",
                     f"{median['step_s'] * 1e3:.0f}", f"{median['user_cores']:.2f}",
                     f"{median['kernel_cores']:.2f}", f"{median['faults_per_step']:,.0f}",
                     f"{base / median['step_s']:.2f}x"])
    print_table(f"Scene training steps by malloc (median of {rounds} processes, {steps} steps "
                "each)", ["configuration", "malloc", "ms/step", "user cores", "kernel cores",
                         "minor faults/step", "steps/s ratio"], rows)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=list(NETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
    else:
        run(args.steps, args.rounds)


if __name__ == "__main__":
    main()
