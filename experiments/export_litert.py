"""``.zyl`` files on the phone runtime: LiteRT sizes, output drift and test scores.

Run (files are exported and measured one after another):
  python -m experiments.export_litert runs/main/lenet300.zyl runs/methods/ttq_lenet5.zyl
  python -m experiments.export_litert FILE.zyl --weights float32 auto int8 --out runs/export_litert

For each file and each ``--weights`` mode it writes ``<out>/<stem>-<mode>.tflite``
(``<mode>-dense`` with ``--dense``: every kernel dense, ``export``'s ``sparse=False``)
(batch 1, the file an app ships) and prints one row: its bytes, its gzip -9
bytes, the ``.zyl`` bytes, max |output(LiteRT) - output(JAX)| over the first
1,000 test images, and the file's task metric computed from the LiteRT
interpreter's outputs (the default interpreter, XNNPACK included) over the
whole 10,000-image test split, next to JAX's on the same decoded weights:
top-1 accuracy, AP50 (pycocotools, after the same box decoding and NMS) or
mIoU (``tasks.*.score_outputs``). The scoring run uses a batch-100 export of
the same kernels (``forms=``: each kernel in the form the batch-1 file stores it; a batch-1
graph cannot be resized: its reshapes are constants). Inputs are preprocessed as the file's
metadata says.

Files of a registered net (``zylax compress --net NET [--method ...]``) need
nothing else: the registry builds their model.
Rows go to ``<out>/<stem>.json``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os

import jax
import numpy as np

from zylax import archive, codecs, export, modelfile, train

EVAL_BATCH = 100
DRIFT_IMAGES = 1000


def _batches(images: np.ndarray):
    """``images`` cut into ``EVAL_BATCH``es (``measure_file`` checks that it divides them)."""
    return (images[i:i + EVAL_BATCH] for i in range(0, len(images), EVAL_BATCH))


def _jax_outputs(apply, images: np.ndarray):
    """Yields ``apply``'s outputs (a list of leaves) for each ``EVAL_BATCH`` images."""
    for batch in _batches(images):
        yield [np.asarray(o) for o in jax.tree.leaves(apply(batch))]


def _scored(task, batches, labels, drift_reference=None) -> tuple[dict, float]:
    """Task scores of the output ``batches`` and, against ``drift_reference`` (the first
    ``DRIFT_IMAGES`` of JAX's outputs, batch by batch), the max |output difference|."""
    drift = 0.0

    def outputs():
        nonlocal drift
        for i, batch in enumerate(batches):
            if drift_reference is not None and i < len(drift_reference):
                drift = max(drift, max(float(np.abs(a - b).max())
                                       for a, b in zip(batch, drift_reference[i], strict=True)))
            yield export.model_outputs(batch)
    return task.score_outputs(outputs(), labels), drift


def measure_file(path: str, modes: list[str], out: str, sparse: bool = True) -> list[dict]:
    """One row per weights mode of one ``.zyl`` file (module docstring); ``sparse``: as
    ``export.export`` (False: every kernel dense, the files and rows named ``<mode>-dense``)."""
    f = modelfile.load_model_file(path)
    variables, model, task = f.variables, f.model, f.task
    methods = export.stored_methods(f.header)
    _, (images, labels) = modelfile.scoring_data(f, f.metadata.data or "fashion_mnist")
    if len(images) % EVAL_BATCH:
        raise ValueError(f"{len(images):,} test images are not batches of {EVAL_BATCH}")
    x = f.preprocess(images)
    dense = jax.tree.map(codecs.dense, variables)
    kwargs = train.mode_kwargs(model, False)
    apply = jax.jit(lambda x: model.apply(dense, x, **kwargs))  # compiled once, used twice
    drift_reference = list(itertools.islice(_jax_outputs(apply, x), DRIFT_IMAGES // EVAL_BATCH))
    jax_scores, _ = _scored(task, _jax_outputs(apply, x), labels)
    stem = os.path.splitext(os.path.basename(path))[0]
    rows = []
    for mode in modes:
        result = export.export(model, variables, x[:1], weights=mode, methods=methods,
                               sparse=sparse)
        label = mode if sparse else f"{mode}-dense"
        archive.write_atomic(os.path.join(out, f"{stem}-{label}.tflite"), result.tflite)
        batched = export.to_tflite(model, variables, x[:1], weights=mode, methods=methods,
                                   batch=EVAL_BATCH, sparse=sparse, forms=result.forms)
        litert_scores, drift = _scored(task, export.interpreter_outputs(batched, _batches(x)),
                                       labels, drift_reference)
        rows.append({
            "file": path, "weights": label, "tflite_bytes": len(result.tflite),
            "gzip9_bytes": len(gzip.compress(result.tflite, 9, mtime=0)),
            "zyl_bytes": os.path.getsize(path), "metric": task.metric,
            "max_output_diff": drift,
            "max_abs_output": max(float(np.abs(o).max()) for b in drift_reference for o in b),
            "litert": litert_scores, "jax": jax_scores,
            "layers": {k: {"method": v.method, "storage": v.storage, "max_error": v.max_error}
                       for k, v in result.layers.items()}})
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = ("| file | weights | .tflite | gzip -9 | .zyl | max \\|Δ output\\| (1,000) | "
          "metric | LiteRT (10,000) | JAX |\n|---|---|---|---|---|---|---|---|---|")


def _row(r: dict) -> str:
    """One Markdown row of ``HEADER``."""
    return (f"| {os.path.basename(r['file'])} | {r['weights']} | {r['tflite_bytes']:,} | "
            f"{r['gzip9_bytes']:,} | {r['zyl_bytes']:,} | {r['max_output_diff']:.2g} "
            f"(of {r['max_abs_output']:.3g}) | {r['metric']} | "
            f"{_percent(r['litert'][r['metric']])} | {_percent(r['jax'][r['metric']])} |")


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--weights", nargs="+", default=["float32", "auto", "int8"],
                        choices=export.WEIGHTS)
    parser.add_argument("--out", default="runs/export_litert")
    parser.add_argument("--dense", action="store_true",
                        help="store every kernel dense (export's sparse=False)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(HEADER)
    for path in args.files:
        rows = measure_file(path, args.weights, args.out, sparse=not args.dense)
        stem = os.path.splitext(os.path.basename(path))[0] + ("-dense" if args.dense else "")
        archive.write_atomic(os.path.join(args.out, f"{stem}.json"),
                             json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
