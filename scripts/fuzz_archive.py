"""The long fuzz campaign behind SECURITY.md: hostile .zyl files against the loader.

    .venv/bin/python scripts/fuzz_archive.py [--mutations 20000] [--seed 0]

Runs the crafted catalogue (tests/hostile_files.py), then ``--mutations``
random header mutations with valid CRCs, then every single-byte flip and
every truncation of a real file; prints how many were tried, refused with
``CorruptFileError``, accepted (still a valid file) or escaped with another
exception, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import hostile_files  # noqa: E402

from zylax import archive, report  # noqa: E402


def attempt(blob: bytes, counts: dict, escapes: list) -> None:
    """Decodes ``blob`` (and builds the inspect report when it is accepted); tallies the outcome."""
    try:
        _, header = archive.decode_bytes(blob)
        report.build(header, file_bytes=len(blob), accuracies={})
        counts["accepted"] += 1
    except archive.CorruptFileError:
        counts["refused"] += 1
    except Exception as err:  # noqa: BLE001 - counting what escapes is the point
        counts["escaped"] += 1
        escapes.append(f"{type(err).__name__}: {err}"[:200])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    valid = hostile_files.valid_file()
    archive.decode_bytes(valid)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(args.seed)
    campaigns = {
        "crafted catalogue": list(hostile_files.catalogue().values()),
        "header mutations": (hostile_files.mutated_file(valid, rng)
                             for _ in range(args.mutations)),
        "single-byte flips": (valid[:i] + bytes([valid[i] ^ 0xFF]) + valid[i + 1:]
                              for i in range(len(valid))),
        "truncations": (valid[:n] for n in range(len(valid))),
    }
    print(f"valid file: {len(valid)} bytes")
    for name, blobs in campaigns.items():
        counts, escapes = {"accepted": 0, "refused": 0, "escaped": 0}, []
        t0 = time.perf_counter()
        for blob in blobs:
            attempt(blob, counts, escapes)
        tried = sum(counts.values())
        print(f"{name}: {tried:,} tried, {counts['refused']:,} refused, "
              f"{counts['accepted']:,} accepted as valid, {counts['escaped']} escaped "
              f"({time.perf_counter() - t0:.0f} s)")
        for line in sorted(set(escapes))[:10]:
            print("  escaped:", line)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {peak / 1024:.0f} MB, {(peak - base_rss) / 1024:.0f} MB above the process "
          "after decoding the valid file once")


if __name__ == "__main__":
    main()
