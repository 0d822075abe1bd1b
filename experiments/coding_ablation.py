"""What each coding part contributes to a compressed file: the figures behind RESULTS.md
"Coding beyond Huffman".

Run:
  python -m experiments.coding_ablation runs/ans/lenet300.zyl runs/ans/lenet5.zyl ...

Each file (written by ``zylax compress``) is read, its shared layers rebuilt as ``Shared``
leaves (the distinct non-zero values as the codebook) and written again in memory once per
row: Huffman only (``index_bits="auto"``, zylax's default: gaps at every width, or dense
indices); each ANS context model alone (``zylax.coding.ans``: ``rows``, ``grid``); both
(``index_bits="ans"``, ``--index-bits ans``); and both with the float biases stored as
float16. Every size is the byte count of a written
file; the lossless rows decode to the same weights (checked), the float16 row is scored on
the 10,000 test images against the file as written (a registered net's file: nothing a
file names is imported). Prints one Markdown row per file and row.
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np

from zylax import archive, data, modelfile
from zylax.coding import ans
from zylax.containers import Cast, Shared
from zylax.transforms import tree as ztree

ROWS = {"Huffman only (index_bits='auto')": ("auto", ans.MODELS),
        "ANS rows": ("ans", ("rows",)), "ANS grid": ("ans", ("grid",)),
        "ANS rows or grid (index_bits='ans')": ("ans", ans.MODELS)}
"""Each row's ``index_bits`` and the ANS context models offered."""


def stored_tree(variables: dict, header: dict, index_bits: str) -> dict:
    """``variables`` with every leaf the file stored as ``shared`` back as a ``Shared`` leaf
    of ``index_bits``, and every ``cast`` one as a ``Cast`` leaf: what the file was written
    from."""
    entries = {(e["collection"], e["name"]): e for e in header["leaves"]}

    def rebuilt(collection, name, value):
        value = np.asarray(value)
        entry = entries[collection, name]
        if entry["method"] == "cast":
            return Cast(value, entry["stored"])
        if entry["method"] != "shared":
            return value
        codebook = np.unique(value[value != 0])
        indices = np.where(value != 0, np.searchsorted(codebook, value), codebook.size)
        return Shared(codebook, indices.astype(np.uint16), index_bits)

    return {c: ztree.map_named(lambda n, v, c=c: rebuilt(c, n, v), t)
            for c, t in variables.items()}


def float16_biases(tree: dict) -> dict:
    """``tree`` with every float array leaf named ``*bias`` in float16."""
    def cast(name, leaf):
        if isinstance(leaf, np.ndarray) and name.endswith("bias") and leaf.dtype.kind == "f":
            return leaf.astype(np.float16)
        return leaf
    return {c: ztree.map_named(cast, t) for c, t in tree.items()}


def ablation(path: str, test_data) -> list[dict]:
    """One row per coding setting of the file at ``path``: bytes and test accuracy."""
    loaded = modelfile.load_model_file(path)
    metadata = loaded.header["metadata"]

    def accuracy(variables) -> float:
        return loaded.task.evaluate(loaded.model, variables, *test_data,
                                    preprocess=loaded.preprocess)["accuracy"]

    written = accuracy(loaded.variables)
    rows = []
    for label, (index_bits, models) in ROWS.items():
        with mock.patch.object(ans, "MODELS", models):  # the models this row offers
            blob = archive.to_bytes(stored_tree(loaded.variables, loaded.header, index_bits),
                                    metadata=metadata)
        decoded, _ = archive.decode_bytes(blob)
        assert ztree.bit_identical(decoded, loaded.variables), label
        rows.append({"setting": label, "bytes": len(blob), "accuracy": written})
    tree = stored_tree(loaded.variables, loaded.header, "ans")
    blob = archive.to_bytes(float16_biases(tree), metadata=metadata)
    decoded, _ = archive.decode_bytes(blob)
    rows.append({"setting": "ANS and float16 biases", "bytes": len(blob),
                 "accuracy": accuracy(decoded)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    test_data = data.load("fashion_mnist", "test")
    print("| file | coding | bytes | x Huffman only | test top-1 |")
    print("|---|---|---|---|---|")
    for path in args.files:
        rows = ablation(path, test_data)
        base = rows[0]["bytes"]
        for row in rows:
            print(f"| {path} | {row['setting']} | {row['bytes']:,} | {row['bytes'] / base:.3f} "
                  f"| {100 * row['accuracy']:.2f}% |")


if __name__ == "__main__":
    main()
