"""Where a segmentation model loses its mIoU: per-class IoU and what each class is taken for.

Run:
  python -m experiments.class_iou runs/scenes/deeplab_e4/model.zyl --max-examples 2000

For a ``.zyl`` segmentation file (``zylax train``'s model.zyl, or a
compressed file) it prints one Markdown row per label: IoU, recall (the
share of the label's pixels predicted as it) and the two labels its pixels
are most often predicted as instead, from the pixel confusion matrix of the
first ``--max-examples`` test scenes (``--split train``: train scenes, to
compare the two; ``--scales``/``--flip``: predicted as ``zylax evaluate``
predicts with them).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from zylax import data, metrics, modelfile, scenes, tasks


def label_names(num_classes: int) -> list[str]:
    """``background`` then the scene classes (``scenes.CLASS_NAMES``), or numbers past them."""
    names = ["background", *scenes.CLASS_NAMES]
    return [names[k] if k < len(names) else str(k) for k in range(num_classes)]


def table(confusion: np.ndarray, names: list[str]) -> str:
    """Markdown rows of per-label IoU, recall and the two commonest wrong predictions."""
    confusion = np.asarray(confusion, np.int64)
    iou = np.asarray(metrics.class_iou(confusion))
    truth = confusion.sum(1)
    lines = ["| label | IoU | recall | mostly mistaken for |", "|---|---|---|---|"]
    for k, name in enumerate(names):
        share = confusion[k] / max(truth[k], 1)
        wrong = [j for j in np.argsort(-share) if j != k][:2]
        mistaken = ", ".join(f"{names[j]} {100 * share[j]:.1f}%" for j in wrong)
        lines.append(f"| {name} | {iou[k]:.3f} | {100 * share[k]:.1f}% | {mistaken} |")
    lines.append(f"| **mean** | **{iou.mean():.3f}** | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a segmentation .zyl file with its model in the metadata")
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="score the file's test scenes (default) or its train scenes")
    parser.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                        help="average the class probabilities of the inputs resized by each S")
    parser.add_argument("--flip", action="store_true", help="also the mirrored inputs")
    args = parser.parse_args()

    f = modelfile.load_model_file(args.file)
    if f.task.name != "segmentation":
        raise SystemExit(f"{args.file} is a {f.task.name} model, not a segmentation one")
    name, test_data = modelfile.scoring_data(f)
    scored = test_data if args.split == "test" else data.load(name, "train")
    images, labels = jax.tree.map(lambda a: a[:args.max_examples], scored)
    try:
        task = tasks.with_views(f.task, args.scales, args.flip)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    confusion = task.confusion(f.model, f.variables, images, labels, preprocess=f.preprocess)
    print(f"{args.file}, first {len(images):,} {args.split} scenes:\n")
    print(table(confusion, label_names(f.task.num_classes)))


if __name__ == "__main__":
    main()
