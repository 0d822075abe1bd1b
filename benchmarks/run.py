"""Runs every benchmark: ``python -m benchmarks.run --all`` (or ``--smoke`` for CI).

``--smoke`` runs each benchmark once at its smallest size (well under a
minute); its numbers are not meaningful, it only proves the code runs.
"""

from __future__ import annotations

import argparse

from benchmarks import (binary_inference, common, end_to_end, huffman, hugepages, kmeans, scaling,
                        scene_steps, step_overhead)


def smoke() -> None:
    """Each benchmark once, at the smallest size."""
    kmeans.run(sizes=(20_000,), bits_list=(3,), repeats=1, max_iter=20, ours_max_iter=20)
    huffman.run(archive_path=None, sizes=(20_000,), repeats=1)
    binary_inference.run(repeats=1, small=True)
    scaling.run(sizes=(10_000, 20_000), repeats=1)


def everything() -> None:
    """All benchmarks at the sizes BENCHMARKS.md reports."""
    step_overhead.run()
    kmeans.run()
    huffman.run()
    binary_inference.run()
    end_to_end.run()
    scaling.run()
    scene_steps.run()
    hugepages.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true")
    group.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(f"machine: {common.machine()}")
    smoke() if args.smoke else everything()


if __name__ == "__main__":
    main()
