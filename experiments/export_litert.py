"""``.zyl`` files on the phone runtime: LiteRT sizes, logit drift and accuracy on Fashion-MNIST.

Run (files are exported and measured one after another):
  python -m experiments.export_litert runs/main/lenet300.zyl runs/quantizers/ttq_lenet5.zyl
  python -m experiments.export_litert FILE.zyl --weights float32 auto int8 --out runs/export_litert

For each file and each ``--weights`` mode it writes ``<out>/<stem>-<mode>.tflite``
(batch 1, the file an app ships) and prints one row: its bytes, its gzip -9
bytes, the ``.zyl`` bytes, max |logit(LiteRT) - logit(JAX)| over the first
1,000 test images, and top-1 accuracy of the LiteRT interpreter (the default
one, XNNPACK included) over the whole 10,000-image test set, next to JAX's
accuracy on the same decoded weights. The accuracy run uses a batch-100
export of the same weights (a batch-1 graph cannot be resized: its reshapes
are constants). Inputs are preprocessed as the file's metadata says.

Files that name their model in the metadata (``zylax compress``) need nothing
else; the files of ``experiments.quantizers`` (``bnn_mlp.zyl``,
``ttq_lenet5.zyl``, ``pattern_lenet5.zyl``) are rebuilt from their stem.
Rows go to ``<out>/<stem>.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os

import jax
import numpy as np

from zylax import archive, cli, codecs, data, export, nets, registry, train
from zylax.transforms import binary

EVAL_BATCH = 100
DRIFT_IMAGES = 1000


def model_for(path: str, metadata: dict, params: dict):
    """The Flax model of a file: from its metadata, else from the stem of the quantizers' files."""
    if "net" in metadata or "model" in metadata:
        return cli._file_model(path, metadata)
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "bnn_mlp":
        hidden = tuple(params[k]["kernel"].shape[1] for k in sorted(params) if k.startswith("fc"))
        return nets.MLP(hidden=hidden, activation=binary.binary_activation)
    if stem.startswith("ttq_lenet5") or stem.startswith("pattern_lenet5"):
        return registry.get("lenet5").factory(10)
    raise ValueError(f"{path}: the metadata names no model and the stem {stem!r} is not one of "
                     "the quantizers' files")


def _interpreter_logits(tflite: bytes, images: np.ndarray) -> np.ndarray:
    """Logits of the default LiteRT interpreter, ``EVAL_BATCH`` images per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]["index"]
    wanted = interpreter.get_output_details()[0]["index"]
    out = []
    for i in range(0, len(images), EVAL_BATCH):
        interpreter.set_tensor(given, images[i:i + EVAL_BATCH])
        interpreter.invoke()
        out.append(interpreter.get_tensor(wanted).copy())
    return np.concatenate(out)


def _jax_logits(model, variables, images: np.ndarray) -> np.ndarray:
    """Logits of ``model.apply`` in inference mode, ``EVAL_BATCH`` images per call."""
    kwargs = train.mode_kwargs(model, False)
    apply = jax.jit(lambda x: model.apply(variables, x, **kwargs))
    return np.concatenate([np.asarray(apply(images[i:i + EVAL_BATCH]))
                           for i in range(0, len(images), EVAL_BATCH)])


def measure_file(path: str, modes: list[str], out: str) -> list[dict]:
    """One row per weights mode of one ``.zyl`` file (module docstring)."""
    variables, metadata = archive.load(path)
    methods = export.stored_methods(archive.read_header(path))
    model = model_for(path, metadata, variables["params"])
    images, labels = data.load(metadata.get("data", "fashion_mnist"), "test")
    x = data.Preprocess.from_dict(metadata["preprocess"])(images)
    dense = jax.tree.map(codecs.dense, variables)
    reference = _jax_logits(model, dense, x)
    stem = os.path.splitext(os.path.basename(path))[0]
    rows = []
    for mode in modes:
        result = export.export(model, variables, x[:1], weights=mode, methods=methods)
        archive.write_atomic(os.path.join(out, f"{stem}-{mode}.tflite"), result.tflite)
        batched = export.to_tflite(model, variables, x[:1], weights=mode, methods=methods,
                                   batch=EVAL_BATCH)
        logits = _interpreter_logits(batched, x)
        rows.append({
            "file": path, "weights": mode, "tflite_bytes": len(result.tflite),
            "gzip9_bytes": len(gzip.compress(result.tflite, 9, mtime=0)),
            "zyl_bytes": os.path.getsize(path),
            "max_logit_diff": float(np.abs(logits[:DRIFT_IMAGES] - reference[:DRIFT_IMAGES])
                                    .max()),
            "max_abs_logit": float(np.abs(reference[:DRIFT_IMAGES]).max()),
            "litert_top1": float(np.mean(logits.argmax(1) == labels)),
            "jax_top1": float(np.mean(reference.argmax(1) == labels)),
            "layers": {k: {"method": v.method, "storage": v.storage, "max_error": v.max_error}
                       for k, v in result.layers.items()}})
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = ("| file | weights | .tflite | gzip -9 | .zyl | max \\|Δ logit\\| (1,000) | "
          "LiteRT top-1 (10,000) | JAX top-1 |\n|---|---|---|---|---|---|---|---|")


def _row(r: dict) -> str:
    """One Markdown row of ``HEADER``."""
    return (f"| {os.path.basename(r['file'])} | {r['weights']} | {r['tflite_bytes']:,} | "
            f"{r['gzip9_bytes']:,} | {r['zyl_bytes']:,} | {r['max_logit_diff']:.2g} "
            f"(of {r['max_abs_logit']:.3g}) | {100 * r['litert_top1']:.2f}% | "
            f"{100 * r['jax_top1']:.2f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--weights", nargs="+", default=["float32", "auto", "int8"],
                        choices=export.WEIGHTS)
    parser.add_argument("--out", default="runs/export_litert")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(HEADER)
    for path in args.files:
        rows = measure_file(path, args.weights, args.out)
        stem = os.path.splitext(os.path.basename(path))[0]
        archive.write_atomic(os.path.join(args.out, f"{stem}.json"),
                             json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
