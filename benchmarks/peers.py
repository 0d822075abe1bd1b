"""zylax against TF Model Optimization Toolkit (and Qwix) on LeNet-300-100 and LeNet-5, side by
side in one run: the file, the shipped download (gzip -9 of the int8 ``.tflite``), top-1 and
wall time.

Run (the peer is not a dependency of zylax; TF-MOT 0.8.1 declares absl-py~=1.2, which
conflicts with chex, yet runs with absl-py 2, so it goes in without its declared
dependencies):
  pip install -e '.[peers]' && pip install --no-deps tensorflow-model-optimization==0.8.1
  python -m benchmarks.peers --out runs/peers [--nets lenet300 lenet5]

TF-MOT, as ../shared/research/peers.md gives the recipe a mobile engineer would follow:
the dense net in Keras 2 (Adam 1e-3, batch 128; 20 epochs for LeNet-300-100, 10 for
LeNet-5), ``prune_low_magnitude`` of each layer zylax's preset prunes to the fraction it
keeps (LeNet-300-100: ip1 5%, ip2 15%; LeNet-5: conv1 66%, conv2 12%, ip1 5%; polynomial
decay, Adam 1e-4, 20 or 12 epochs), ``cluster_weights`` with as many linear-initialised
clusters as the preset's codebook has values (32 for dense, 256 for conv layers),
preserving sparsity (Adam 1e-5, 3 epochs), then the TFLite converter with
``Optimize.DEFAULT`` (int8 weights). zylax: the registry's baseline of the same net (its
recipe; cached under ``runs/`` as ``zylax compress`` caches it), then the registry's Deep
Compression preset, ``budget.run`` at the net's budget (``RUNS``), soft weight-sharing
(10 epochs under the prior, then 1 of 4-bit k-means sharing) and sparse variational
dropout (the ``svd`` recipe: 10 epochs at the paper's Adam 1e-3, then 1 of k-means sharing
at Han's 8 conv / 5 dense bits, ANS-coded masks); each file exported by
``zylax.export`` (``weights="auto"``). Both tools see the same 60,000 training images with
the same normalisation; every top-1 is the LiteRT interpreter's over all 10,000 test
images. Qwix (the JAX quantization peer) quantizes the same zylax baseline's weights
post-training (int8 and int4, one scale per channel) and is scored in JAX: it writes no
file, so its bytes are those of the packed arrays. Compression wall times exclude the
dense baselines (the zylax one is cached); 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table
from experiments import budget_pareto, export_litert
from zylax import baseline, budget, compress, data, methods, presets, registry, tasks

@dataclasses.dataclass(frozen=True)
class PeerRun:
    """The settings of one net's side-by-side run.

    Attributes:
      tfmot_epochs: TF-MOT's dense, pruning and clustering epochs
        (../shared/research/peers.md).
      budget: the ``.zyl`` bytes of zylax's budget row.
    """

    tfmot_epochs: tuple[int, int, int]
    budget: int


RUNS = {"lenet300": PeerRun(tfmot_epochs=(20, 20, 3), budget=20_000),
        "lenet5": PeerRun(tfmot_epochs=(10, 12, 3), budget=30_000)}
"""The nets measured, each with its TF-MOT epochs and zylax budget."""


def keras_twin(net: str, keras):
    """The Keras 2 model of the registry's ``net``: the same layers, names and activations."""
    layers = keras.layers
    if net == "lenet300":
        body = [layers.Flatten(input_shape=(28, 28, 1)),
                layers.Dense(300, activation="relu", name="ip1"),
                layers.Dense(100, activation="relu", name="ip2"), layers.Dense(10, name="ip3")]
    elif net == "lenet5":  # Caffe's LeNet-5: no nonlinearity after the convolutions
        body = [layers.Conv2D(20, 5, input_shape=(28, 28, 1), name="conv1"), layers.MaxPool2D(2),
                layers.Conv2D(50, 5, name="conv2"), layers.MaxPool2D(2), layers.Flatten(),
                layers.Dense(500, activation="relu", name="ip1"), layers.Dense(10, name="ip2")]
    else:
        raise ValueError(f"no Keras twin of {net!r}")
    return keras.Sequential(body)


def preset_per_layer(net: str, layers: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """What zylax's Deep Compression preset of ``net`` does to each of ``layers``: the kept
    fraction of each pruned layer and the codebook size (2^bits) of each: TF-MOT gets the
    same."""
    settings = registry.get(net).compression["deep"]["settings"]

    def first(patterns, layer: str):
        patterns = patterns if isinstance(patterns, dict) else {".*": patterns}
        return next((v for p, v in patterns.items() if re.fullmatch(p, f"{layer}/kernel")), None)
    kept = {layer: 1 - first(settings["prune"]["sparsity"], layer) for layer in layers
            if first(settings["prune"]["sparsity"], layer) is not None}
    return kept, {layer: 2 ** first(settings["share"]["bits"], layer) for layer in layers}


def tfmot(net: str, train_data, test_data, out: str, epochs: tuple[int, int, int]) -> dict:
    """TF-MOT's prune -> cluster -> int8 ``.tflite`` of ``net`` (module docstring)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # TF-MOT needs Keras 2
    import tensorflow as tf  # the peer: only this benchmark needs it
    import tensorflow_model_optimization as tfmot_
    import tf_keras as keras

    prep = data.preprocessing("fashion_mnist")
    x, y = np.asarray(prep(train_data[0]), np.float32), train_data[1]
    keras.utils.set_random_seed(0)
    model = keras_twin(net, keras)
    weighted = [layer.name for layer in model.layers if layer.weights]
    kept, clusters = preset_per_layer(net, weighted)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs[0], verbose=0)
    dense_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    end = math.ceil(len(x) / 128) * epochs[1]

    def prune(layer):
        if layer.name not in kept:
            return layer
        return tfmot_.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=tfmot_.sparsity.keras.PolynomialDecay(
                0.0, 1 - kept[layer.name], 0, end, frequency=100))
    pruned = keras.models.clone_model(model, clone_function=prune)
    pruned.compile(keras.optimizers.Adam(1e-4), loss)
    pruned.fit(x, y, batch_size=128, epochs=epochs[1], verbose=0,
               callbacks=[tfmot_.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot_.sparsity.keras.strip_pruning(pruned)

    def cluster(layer):
        if layer.name not in clusters:
            return layer
        return tfmot_.clustering.keras.cluster_weights(
            layer, number_of_clusters=clusters[layer.name], preserve_sparsity=True,
            cluster_centroids_init=tfmot_.clustering.keras.CentroidInitialization.LINEAR)
    clustered = keras.models.clone_model(stripped, clone_function=cluster)
    clustered.compile(keras.optimizers.Adam(1e-5), loss)
    clustered.fit(x, y, batch_size=128, epochs=epochs[2], verbose=0)
    final = tfmot_.clustering.keras.strip_clustering(clustered)
    converter = tf.lite.TFLiteConverter.from_keras_model(final)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite = converter.convert()
    seconds = time.perf_counter() - t0
    path = os.path.join(out, f"tfmot_{net}.tflite")
    with open(path, "wb") as f:
        f.write(tflite)
    return {"tool": "TF-MOT prune + cluster + int8", "file_bytes": len(tflite),
            "download_bytes": len(gzip.compress(tflite, 9, mtime=0)),
            "top1": _interpreter_top1(tflite, prep(test_data[0]), test_data[1]),
            "seconds": seconds, "dense_seconds": dense_seconds, "file": path}


def _interpreter_top1(tflite: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 of the LiteRT interpreter, one image an invoke (batch 1, as an app runs it)."""
    from ai_edge_litert.interpreter import Interpreter  # the runtime: an extra

    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]["index"]
    wanted = interpreter.get_output_details()[0]["index"]
    correct = 0
    for image, label in zip(np.asarray(images, np.float32), labels):
        interpreter.set_tensor(given, image[None])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(wanted)) == label)
    return correct / len(labels)


ZYLAX_RUNS = ("preset", "budget", "sws", "svd")
"""The zylax rows ``zylax_rows`` can run (``--zylax``)."""


def zylax_rows(net: str, model, variables, prep, train_data, test_data, out: str, limit: int,
               which=ZYLAX_RUNS) -> list[dict]:
    """zylax's files of the registry's ``net`` baseline: its Deep Compression preset,
    ``budget.run`` at ``limit`` bytes (positions as Huffman-coded gaps only, as BENCHMARKS.md's
    rows were measured), soft weight-sharing (``experiments.soft_sharing``'s
    defaults) and the ``svd`` recipe's defaults (``zylax compress --method svd --index-bits
    ans``), each exported and scored in LiteRT; ``which``: those of ``ZYLAX_RUNS`` to run."""
    choice = baseline.choose_model(net, None, None, None)
    task = tasks.Classification()
    metadata = {"net": net, "data": "fashion_mnist"}
    preset = presets.override(choice.compression)
    batch = choice.recipe.batch_size
    runs = {
        "preset": lambda path: compress.run(
            model, variables, train_data, test_data, preset.chain(), out=path,
            retrain=compress.Retrain(batch_size=batch, **preset.retrain), preprocess=prep,
            task=task, metadata=metadata, progress=False),
        "budget": lambda path: budget.run(
            model, variables, train_data, test_data, out=path, budget=limit, preprocess=prep,
            task=task, metadata=metadata, progress=False,
            retrain=compress.Retrain(batch_size=batch),
            index_bits="auto"),  # as BENCHMARKS.md measured: Huffman-coded gaps only
        "sws": lambda path: compress.run(
            model, variables, train_data, test_data,
            [methods.soft_share(epochs=10), methods.share(bits=4, epochs=1)], out=path,
            retrain=compress.Retrain(learning_rate=1e-3, batch_size=256), preprocess=prep,
            task=task, metadata=metadata, progress=False),
        "svd": lambda path: compress.run(
            model, variables, train_data, test_data,
            methods.build("svd", {"share": {"index_bits": "ans"}}), out=path,
            retrain=compress.Retrain(batch_size=batch), preprocess=prep, task=task,
            metadata=metadata, progress=False),
    }
    labels = {"preset": ("zylax Deep Compression preset", "deep"),
              "budget": (f"zylax --budget {limit:,}", f"budget{limit}"),
              "sws": ("zylax soft weight-sharing (sws)", "sws"),
              "svd": ("zylax sparse variational dropout (svd)", "svd")}
    found = []
    for key in which:
        tool, stem = labels[key]
        path = os.path.join(out, f"zylax_{net}_{stem}.zyl")
        t0 = time.perf_counter()
        runs[key](path)
        seconds = time.perf_counter() - t0
        measured = export_litert.measure_file(path, ["auto"], out)[0]
        found.append({"tool": tool, "file_bytes": os.path.getsize(path),
                      "download_bytes": measured["gzip9_bytes"],
                      "top1": measured["litert"]["accuracy"], "seconds": seconds,
                      "file": path})
    return found


def qwix_rows(model, variables, prep, test_data) -> list[dict]:
    """Qwix's weight-only post-training quantization (int8, int4; absmax, one scale per
    channel) of the same baseline, scored in JAX. Qwix writes no file: "file" counts the
    packed quantized arrays, scales and float biases, "download" their gzip -9. Its PTQ
    quantizes a convolution's weights only together with its activations, so weight-only
    takes the dense layers (``dot_general``) and leaves convolutions float32."""
    import qwix  # the JAX peer: only this benchmark needs it

    x, rows = prep(test_data[0]), []
    for qtype, bits in (("int8", 8), ("int4", 4)):
        t0 = time.perf_counter()
        quantized = qwix.quantize_model(model, qwix.PtqProvider(
            [qwix.QuantizationRule(module_path=".*", op_names=("dot_general",),
                                   weight_qtype=qtype)]))
        abstract = jax.eval_shape(quantized.init, jax.random.key(0), x[:1])
        params = qwix.quantize_params(jax.tree.map(jnp.asarray, dict(variables["params"])),
                                      abstract["params"])
        seconds = time.perf_counter() - t0
        logits = jax.jit(lambda p, x: quantized.apply({"params": p}, x))(params, x)
        blob = b"".join(_packed_bytes(leaf, bits) for leaf in jax.tree.leaves(params))
        rows.append({"tool": f"Qwix weight-only {qtype} (dense layers, PTQ)",
                     "file_bytes": len(blob),
                     "download_bytes": len(gzip.compress(blob, 9, mtime=0)),
                     "top1": float(np.mean(np.argmax(logits, -1) == test_data[1])),
                     "seconds": seconds, "file": None})
    return rows


def _packed_bytes(leaf, bits: int) -> bytes:
    """A leaf's bytes as stored: integers ``bits`` wide, packed; floats as they are."""
    values = np.asarray(leaf)
    if not np.issubdtype(values.dtype, np.integer) and values.dtype.name != "int4":
        return values.tobytes()
    flat = values.astype(np.int64).ravel() & ((1 << bits) - 1)
    per = 8 // bits
    flat = np.concatenate([flat, np.zeros(-flat.size % per, np.int64)]).reshape(-1, per)
    return (flat << (np.arange(per) * bits)).sum(1).astype(np.uint8).tobytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/peers")
    parser.add_argument("--nets", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    parser.add_argument("--zylax", nargs="+", choices=ZYLAX_RUNS, default=list(ZYLAX_RUNS),
                        help="the zylax rows to run (default: all)")
    parser.add_argument("--no-qwix", action="store_true", help="leave out Qwix's rows")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
    results = {}
    for net in args.nets:
        run = RUNS[net]
        peer = tfmot(net, train_data, test_data, args.out, run.tfmot_epochs)
        model, variables, prep, _, _ = budget_pareto.registry_baseline(net, train_data)
        rows = [peer, *zylax_rows(net, model, variables, prep, train_data, test_data, args.out,
                                  run.budget, args.zylax),
                *([] if args.no_qwix else qwix_rows(model, variables, prep, test_data))]
        table = [[r["tool"], f"{r['file_bytes']:,}", f"{r['file_bytes'] / peer['file_bytes']:.2f}",
                  f"{r['download_bytes']:,}",
                  f"{r['download_bytes'] / peer['download_bytes']:.2f}",
                  f"{r['download_bytes'] / r['file_bytes']:.2f}",
                  f"{100 * r['top1']:.2f}%", f"{100 * (r['top1'] - peer['top1']):+.2f}",
                  f"{r['seconds']:.0f}", f"{r['seconds'] / peer['seconds']:.2f}"] for r in rows]
        print_table(f"{net} on Fashion-MNIST: the shipped file against TF-MOT's",
                    ["tool", "file B (.zyl, .tflite; Qwix: arrays)", "x TF-MOT",
                     "download B (gzip -9)", "x TF-MOT", "download / file",
                     "top-1 (LiteRT; Qwix: JAX)", "points vs TF-MOT", "compress s", "x TF-MOT"],
                    table)
        results[net] = rows
        with open(os.path.join(args.out, "peers.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
