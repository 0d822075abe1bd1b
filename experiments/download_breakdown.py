"""Where a shipped download's bytes go: each kernel's bytes in a ``.zyl`` file against its
tensor in the exported ``.tflite`` compressed alone by gzip -9, then the rest of both files,
then what compressing the whole ``.tflite`` at once adds.

Run (files of registered nets, ``zylax compress --net NET``):
  python -m experiments.download_breakdown runs/vd_long/lenet300-kl0.7-e100-float16.zyl

Each file is exported as ``zylax compress --tflite`` exports it (weights auto, batch 1).
Prints one Markdown table per file: a row per kernel the exporter rewrote (its ``.zyl``
bytes: ``zylax inspect``'s "total B"), a row for everything else (biases, the graph, names,
the ``.zyl`` header), the sum of the parts compressed one by one and the download (gzip -9
of the whole file).
"""

from __future__ import annotations

import argparse
import gzip
import os

import numpy as np

from zylax import archive, export, modelfile, report


def gzipped(data: bytes) -> int:
    """Bytes of ``gzip -9`` of ``data`` (no timestamp)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def kernel_buffers(tflite: bytes) -> tuple[dict[str, bytes], bytes]:
    """``({params path: the bytes of its rewritten kernel tensor}, the file without them)``:
    the exporter names each tensor it writes ``zylax/<path>/<storage>``."""
    from ai_edge_litert.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    found = {}
    for tensor in graph.subgraphs[0].tensors:
        name = tensor.name.decode()
        data = graph.buffers[tensor.buffer].data
        if name.startswith("zylax/") and data is not None and len(data):
            found[name.split("/", 1)[1].rsplit("/", 1)[0]] = np.asarray(data, np.uint8).tobytes()
    rest = tflite
    for data in found.values():
        rest = rest.replace(data, b"", 1)
    return found, rest


def breakdown(path: str) -> list[tuple[str, int, int, int]]:
    """``(part, .zyl bytes, .tflite bytes, gzip -9 bytes)`` rows of one file (module
    docstring)."""
    loaded = modelfile.load_model_file(path)
    methods = export.stored_methods(loaded.header)
    sample = loaded.preprocess(np.zeros((1, *loaded.input_shape), np.uint8))
    tflite = export.to_tflite(loaded.model, loaded.variables, sample, methods=methods)
    coded = {row["name"]: row["coded_bytes"] for row in report.layer_rows(loaded.header)}
    kernels, rest = kernel_buffers(tflite)
    rows = [(name, coded[name], len(data), gzipped(data)) for name, data in kernels.items()]
    zyl = os.path.getsize(path)
    rows.append(("everything else", zyl - sum(coded[n] for n in kernels), len(rest),
                 gzipped(rest)))
    rows.append(("the parts one by one", zyl, len(tflite), sum(r[3] for r in rows)))
    rows.append(("the file (download)", zyl, len(tflite), gzipped(tflite)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        archive.read_header(path)  # a damaged file is refused before the export starts
        print(f"\n{path}\n\n| part | .zyl bytes | .tflite bytes | gzip -9 | gzip -9 / .zyl |\n"
              "|---|---|---|---|---|")
        for part, zyl, raw, packed in breakdown(path):
            print(f"| {part} | {zyl:,} | {raw:,} | {packed:,} | {packed / max(zyl, 1):.2f}x |")


if __name__ == "__main__":
    main()
