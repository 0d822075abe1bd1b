"""Where a shipped download's bytes go: each kernel's bytes in a ``.zyl`` file against its
tensor in the exported ``.tflite`` compressed alone by gzip -9, then the rest of both files,
then what compressing the whole ``.tflite`` at once adds.

Run (files of registered nets, ``zylax compress --net NET``; ``--model pkg.mod:factory``
for files of your own model):
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

from zylax import archive, export, modelfile, registry, report


def gzipped(data: bytes) -> int:
    """Bytes of ``gzip -9`` of ``data`` (no timestamp)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def kernel_buffers(tflite: bytes, paths) -> tuple[dict[str, bytes], bytes]:
    """``({params path: the bytes of the tensors that store its kernel}, the file without
    them)``: the exporter names every tensor it writes for a kernel ``zylax/<path>/...``
    (one dense tensor, two for ternary, or the values and gaps of a sparse kernel; the
    sparse form's int32 shape constants count as the rest)."""
    from ai_edge_litert.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    found, rest = {}, tflite
    for tensor in graph.subgraphs[0].tensors:
        name = tensor.name.decode()
        data = graph.buffers[tensor.buffer].data
        path = next((p for p in paths if name.startswith(f"zylax/{p}/")), None)
        if path is None or data is None or not len(data) or \
                tensor.type == flatbuffer_utils.schema_fb.TensorType.INT32:
            continue
        data = np.asarray(data, np.uint8).tobytes()
        found[path] = found.get(path, b"") + data
        rest = rest.replace(data, b"", 1)
    return found, rest


def breakdown(path: str, sparse: bool = True, model=None) -> list[tuple[str, int, int, int]]:
    """``(part, .zyl bytes, .tflite bytes, gzip -9 bytes)`` rows of one file (module
    docstring); ``model``: the module or factory of a file made from a user's model."""
    loaded = modelfile.load_model_file(path, model=model)
    methods = export.stored_methods(loaded.header)
    sample = loaded.preprocess(np.zeros((1, *loaded.input_shape), np.uint8))
    exported = export.export(loaded.model, loaded.variables, sample, methods=methods,
                             sparse=sparse)
    tflite = exported.tflite
    coded = {row["name"]: row["coded_bytes"] for row in report.layer_rows(loaded.header)}
    kernels, rest = kernel_buffers(tflite, [p for p, row in exported.layers.items() if row.ops])
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
    parser.add_argument("--dense", action="store_true",
                        help="store every kernel dense (export's sparse=False)")
    parser.add_argument("--model", help="package.module:factory of files made from your own "
                        "model (as zylax --model; a file never names code that runs)")
    args = parser.parse_args()
    model = registry.import_factory(args.model) if args.model else None
    for path in args.files:
        archive.read_header(path)  # a damaged file is refused before the export starts
        print(f"\n{path}\n\n| part | .zyl bytes | .tflite bytes | gzip -9 | gzip -9 / .zyl |\n"
              "|---|---|---|---|---|")
        for part, zyl, raw, packed in breakdown(path, sparse=not args.dense, model=model):
            print(f"| {part} | {zyl:,} | {raw:,} | {packed:,} | {packed / max(zyl, 1):.2f}x |")


if __name__ == "__main__":
    main()
