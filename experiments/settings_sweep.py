"""Before an hour of retraining: the file size and untrained score of compression settings.

Run:
  python -m experiments.settings_sweep runs/scenes/ssdlite_e6/model.zyl \\
      --sparsity 0.5 0.6 0.65 0.75 --bits 4 5 --max-examples 2000

For a trained ``.zyl`` file (``zylax train``'s model.zyl) and each sparsity x
bits, it prunes every kernel but the depthwise ones by magnitude, shares
every kernel by k-means (depthwise ones at ``--depthwise-bits``), stores the
unshared leaves as ``--unshared-dtype``, and prints the exact bytes of the
file ``archive`` would write, its ratio to the dense variables, and the
task metric (accuracy, AP50, mIoU) before any retraining of the pruned model
and of the model the file decodes to (on the first ``--max-examples`` test
examples; ``--fold-batch-norm`` folds BatchNorm as ``zylax compress
--fold-batch-norm`` does). It runs the stages of ``compress.run`` with no
retraining epochs. The size is what a compression run with these settings lands near;
retraining changes the Huffman-coded bytes by a few percent. The untrained score says how much
retraining has to win back.
"""

from __future__ import annotations

import argparse
import itertools

import jax
import numpy as np

from zylax import archive, compress, modelfile
from zylax.nets.layers import mode_kwargs


def shared_file(model, variables: dict, sparsity, bits, unshared_dtype: str | None,
                sample, fold: bool = False) -> tuple[int, dict, dict]:
    """``(bytes, pruned variables, decoded variables)`` of the file ``compress.run`` would
    write for ``variables`` pruned at ``sparsity`` and shared at ``bits`` (``methods.prune``
    and ``methods.share`` settings) without retraining; ``sample`` is one model input."""
    preset = compress.Preset(methods="deep", unshared_dtype=unshared_dtype, settings={
        "prune": {"sparsity": sparsity, "epochs": 0}, "share": {"bits": bits, "epochs": 0}})
    key = jax.random.key(0)
    prune, share = preset.chain()
    stage = compress.begin(prune, variables, key)
    pruned = {**stage.collections, "params": stage.plan.apply(stage.state)}
    stage = compress.follow(stage, share, key)
    blob = archive.to_bytes(compress.storable(stage, model, sample, fold,
                                              mode_kwargs(model, False)))
    return len(blob), jax.device_get(pruned), archive.decode_bytes(blob)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a trained .zyl file with its model in the metadata")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.6, 0.75])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--depthwise-bits", type=int, default=5)
    parser.add_argument("--unshared-dtype", default="float16", choices=("float16", "bfloat16"))
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--fold-batch-norm", action="store_true",
                        help="fold BatchNorm statistics into scale and bias (compress's "
                             "--fold-batch-norm)")
    args = parser.parse_args()

    f = modelfile.load_model_file(args.file)
    variables = f.variables
    test = jax.tree.map(lambda a: a[:args.max_examples], modelfile.scoring_data(f)[1])
    dense = sum(np.asarray(v).nbytes for v in jax.tree.leaves(variables))

    sample = f.preprocess(test[0][:1])

    def score(candidate) -> float:
        return f.task.evaluate(f.model, candidate, *test, preprocess=f.preprocess)[f.task.metric]

    print(f"dense: {dense:,} B, {f.task.metric} {score(variables):.4f} "
          f"on the first {args.max_examples:,} test examples")
    metric = f.task.metric
    print(f"| sparsity | bits | file bytes | ratio | {metric} pruned | {metric} pruned + shared |")
    print("|---|---|---|---|---|---|")
    for sparsity, bits in itertools.product(args.sparsity, args.bits):
        size, pruned, decoded = shared_file(
            f.model, variables, {".*depthwise/kernel": 0.0, ".*kernel": sparsity},
            {".*depthwise/kernel": args.depthwise_bits, ".*": bits}, args.unshared_dtype,
            sample, args.fold_batch_norm)
        print(f"| {sparsity:.2f} | {bits} | {size:,} | {dense / size:.2f}x | "
              f"{score(pruned):.4f} | {score(decoded):.4f} |", flush=True)


if __name__ == "__main__":
    main()
