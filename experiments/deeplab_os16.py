"""``DeepLabV3Small`` at output stride 16: the same parameters as the registered net (OS 8).

DeepLabV3 (Chen et al. 2017, section 4.1) trains at output stride 16 and
evaluates at 8. The later bottlenecks are dilated instead of strided, so the
kernels are the same and only the grid of the head changes. At 96x96 the 6x6
grid of OS 16 costs a third of the 12x12 grid's MACs (14.6M against 44.1M)
and trains at 2x the scenes per second (``python -m benchmarks.scene_steps``).
So most epochs can run there and the last ones at OS 8 (RESULTS.md, "DeepLabV3
at a higher learning rate")::

    zylax train --model experiments.deeplab_os16:segmenter --recipe deeplabv3_mobilenet_v2 \\
        --task segmentation --data fashion_mnist_scenes --epochs 3 --batch-size 32 --augment \\
        --init-from runs/scenes/trunk_sgd/model.zyl --out runs/scenes/deeplab_os16
    python -m experiments.deeplab_os16 runs/scenes/deeplab_os16/model.zyl --max-examples 1000
    zylax train --net deeplabv3_mobilenet_v2 --data fashion_mnist_scenes --epochs 1 \\
        --batch-size 32 --augment --learning-rate 1e-3 \\
        --init-from runs/scenes/deeplab_os16/model.zyl --out runs/scenes/deeplab_os16_8

Run as a script, it scores a DeepLabV3Small ``.zyl`` file at both output
strides on the first ``--max-examples`` test scenes.
"""

from __future__ import annotations

import argparse

import jax

from zylax import modelfile
from zylax.nets import DeepLabV3Small


def segmenter(num_classes: int):
    """``DeepLabV3Small(num_classes)`` with ``output_stride=16`` (6x6 logits at 96x96)."""
    return DeepLabV3Small(num_classes, output_stride=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a .zyl file of DeepLabV3Small (either output stride)")
    parser.add_argument("--max-examples", type=int, default=1000)
    args = parser.parse_args()
    f = modelfile.load_model_file(args.file)
    images, labels = jax.tree.map(lambda a: a[:args.max_examples], modelfile.scoring_data(f)[1])
    for stride, model in ((16, segmenter(f.task.num_classes)),
                          (8, DeepLabV3Small(f.task.num_classes))):
        scores = f.task.evaluate(model, f.variables, images, labels, preprocess=f.preprocess)
        print(f"output stride {stride}: mIoU {scores['mIoU']:.4f}, "
              f"pixel accuracy {scores['pixel_accuracy']:.4f} on {len(images)} test scenes")


if __name__ == "__main__":
    main()
