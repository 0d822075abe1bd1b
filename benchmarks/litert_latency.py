"""LiteRT latency: one image through the default interpreter, per weights mode, vs JAX.

Run: python -m benchmarks.litert_latency [FILE.zyl ...]   (needs zylax[litert])
Each ``.zyl`` file (default: the ones earlier runs left under ``runs/``, those
missing are skipped) is exported at batch 1 with ``weights`` float32, auto,
auto with every kernel dense (``sparse=False``), int8 and int4; one
``invoke`` of the default interpreter (XNNPACK delegate) with 1 and with 2
threads is timed on a preprocessed test image, next to the jitted
``model.apply`` at batch 1 in the same process (the baseline).
Outputs (all of them, for the detection nets' two) are checked against JAX
before timing (max |diff| column).
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from benchmarks.common import measure, print_table
from zylax import codecs, export, modelfile, train

FILES = ("runs/main/lenet300.zyl", "runs/cli/lenet5.zyl", "runs/quantizers/ttq_lenet5.zyl",
         "runs/quantizers/bnn_mlp.zyl", "runs/sq20/squeezenet1_1.zyl", "runs/cli/mobilenet_v1.zyl",
         "runs/cli/mobilenet_v2.zyl", "runs/cli/sepnet.zyl", "runs/scenes/ssdlite_dc.zyl",
         "runs/scenes/deeplab_e1/model.zyl")
MODES = (("float32", True), ("auto", True), ("auto", False), ("int8", True), ("int4", True))
"""``(weights, sparse)`` of each row (``export.export``'s arguments)."""


THREADS = (1, 2)


def _invoker(tflite: bytes, x: np.ndarray, threads: int):
    """A function running one invoke of the default interpreter (``threads`` threads) on ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite, num_threads=threads)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]["index"]
    wanted = [d["index"] for d in interpreter.get_output_details()]

    def invoke():
        interpreter.set_tensor(given, x)
        interpreter.invoke()
        return [interpreter.get_tensor(k) for k in wanted]
    return invoke


def file_rows(path: str, repeats: int = 51) -> list[list[str]]:
    """Rows of one file: per mode the bytes, LiteRT time at 1 and 2 threads, JAX time, ratios."""
    loaded = modelfile.load_model_file(path)
    model, variables = loaded.model, loaded.variables
    methods = export.stored_methods(loaded.header)
    _, (images, _) = modelfile.scoring_data(loaded, loaded.metadata.data or "fashion_mnist")
    x = loaded.preprocess(images[:1])
    dense = jax.tree.map(codecs.dense, variables)
    kwargs = train.mode_kwargs(model, False)
    apply = jax.jit(lambda v, a: model.apply(v, a, **kwargs))
    expected = [np.asarray(o) for o in jax.tree.leaves(apply(dense, x))]
    jax_time = measure(lambda: apply(dense, x), repeats=repeats)
    rows = []
    for mode, sparse in MODES:
        tflite = export.to_tflite(model, variables, x, weights=mode, methods=methods,
                                  sparse=sparse)
        invokers = [_invoker(tflite, x, threads) for threads in THREADS]
        diff = max(float(np.abs(a - b).max()) for invoke in invokers
                   for a, b in zip(invoke(), expected, strict=True))
        timings = [measure(invoke, repeats=repeats) for invoke in invokers]
        label = mode if sparse else f"{mode}, dense"
        rows.append([path.removeprefix("runs/"), label, f"{len(tflite):,}",
                     *(str(t) for t in timings), str(jax_time),
                     *(f"{jax_time.median / t.median:.2f}x" for t in timings), f"{diff:.2g}"])
    return rows


def run(files=FILES, repeats: int = 51) -> None:
    """Prints the table of every file present."""
    rows = [row for path in files if os.path.isfile(path) for row in file_rows(path, repeats)]
    print_table("LiteRT latency, batch 1 (default interpreter, XNNPACK) vs jitted JAX",
                ["file", "weights", ".tflite bytes", "LiteRT 1 thread", "LiteRT 2 threads",
                 "JAX apply", "speed-up 1 thread", "speed-up 2 threads", "max |diff|"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", default=list(FILES))
    parser.add_argument("--repeats", type=int, default=51)
    args = parser.parse_args()
    run(args.files, args.repeats)


if __name__ == "__main__":
    main()
