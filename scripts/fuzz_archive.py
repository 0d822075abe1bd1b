"""The long fuzz campaign behind SECURITY.md: hostile .zyl files against the loader.

    .venv/bin/python scripts/fuzz_archive.py [--mutations 20000] [--seed 0] [--commands]

Runs the crafted catalogue (tests/hostile_files.py), class by class, then
``--mutations`` random header mutations with valid CRCs (a third of them with
an edit of the newer classes: many-part names, bloated or hostile metadata,
overflowing constants), then every single-byte flip and every truncation of a
real file. Each file is decoded and its metadata checked
(``modelfile.check_metadata``); the script prints how many were tried,
refused with ``CorruptFileError``, accepted (a valid file) or escaped with
another exception, the slowest file, and the largest rise of peak resident
memory while one file was read. With
``--commands`` it then runs every crafted file through ``zylax inspect``,
``evaluate``, ``export`` and ``compress --from`` (one process per command, a
module planted in the current folder) and prints the exit codes, the slowest
file, the largest rise of peak RSS and whether the planted module was imported.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import hostile_files  # noqa: E402

from zylax import archive, modelfile, report  # noqa: E402


def attempt(blob: bytes, counts: dict, escapes: list) -> None:
    """Decodes ``blob`` (and builds the inspect report when it is accepted); tallies the outcome."""
    try:
        _, header = archive.decode_bytes(blob)
        modelfile.check_metadata(header["metadata"])
        report.build(header, file_bytes=len(blob), accuracies={})
        counts["accepted"] += 1
    except archive.CorruptFileError:
        counts["refused"] += 1
    except Exception as err:  # noqa: BLE001 - counting what escapes is the point
        counts["escaped"] += 1
        escapes.append(f"{type(err).__name__}: {err}"[:200])


COMMAND_RUN = """
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import hostile_files
with tempfile.TemporaryDirectory() as folder:
    results = hostile_files.run_command(sys.argv[2], folder)
    imported = os.path.exists(os.path.join(folder, hostile_files.PLANTED_MARKER))
print(json.dumps({"results": results, "imported": imported}))
"""


def commands() -> None:
    """Every crafted file through each command, in a fresh process per command."""
    tests = os.path.join(os.path.dirname(__file__), "..", "tests")
    for command in sorted(hostile_files.COMMANDS):
        proc = subprocess.run([sys.executable, "-c", COMMAND_RUN, tests, command],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            print(f"zylax {command}: the run itself failed: {proc.stderr[-300:]}")
            continue
        run = json.loads(proc.stdout.splitlines()[-1])
        results = run["results"].values()
        codes = collections.Counter(str(r["code"]) for r in results)
        lines = max(len(r["stderr"].strip().splitlines()) for r in results)
        print(f"zylax {command}: {len(results)} files, exit codes {dict(sorted(codes.items()))}, "
              f"at most {lines} stderr line(s), slowest {max(r['seconds'] for r in results):.2f} "
              f"s, peak RSS rise {max(r['rss_mb'] for r in results):.0f} MB, planted module "
              f"imported: {run['imported']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", action="store_true",
                        help="also run every crafted file through the zylax commands")
    args = parser.parse_args()
    valid = hostile_files.valid_file()
    archive.decode_bytes(valid)
    rise = 0
    rng = random.Random(args.seed)
    campaigns = {
        **{f"crafted: {cls}": list(files.values())
           for cls, files in hostile_files.catalogue().items()},
        "header mutations": (hostile_files.mutated_file(valid, rng)
                             for _ in range(args.mutations)),
        "single-byte flips": (valid[:i] + bytes([valid[i] ^ 0xFF]) + valid[i + 1:]
                              for i in range(len(valid))),
        "truncations": (valid[:n] for n in range(len(valid))),
    }
    print(f"valid file: {len(valid)} bytes")
    for name, blobs in campaigns.items():
        counts, escapes, slowest = {"accepted": 0, "refused": 0, "escaped": 0}, [], 0.0
        t0 = time.perf_counter()
        for blob in blobs:
            t1, before = time.perf_counter(), hostile_files.reset_peak_rss()
            attempt(blob, counts, escapes)
            slowest = max(slowest, time.perf_counter() - t1)
            rise = max(rise, hostile_files.peak_rss() - before)
        tried = sum(counts.values())
        print(f"{name}: {tried:,} tried, {counts['refused']:,} refused, "
              f"{counts['accepted']:,} accepted as valid, {counts['escaped']} escaped "
              f"({time.perf_counter() - t0:.0f} s; slowest file {slowest:.2f} s)")
        for line in sorted(set(escapes))[:10]:
            print("  escaped:", line)
    print(f"largest rise of peak RSS while one file was read: {rise / 1024:.0f} MB")
    if args.commands:
        commands()


if __name__ == "__main__":
    main()
