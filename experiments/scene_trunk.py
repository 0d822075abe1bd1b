"""The MobileNet V2 trunk of ``DeepLabV3Small``/``SSDLiteSmall`` as a Fashion-MNIST classifier.

DeepLab's models start from an ImageNet-trained backbone; here the backbone is
pretrained on the 60,000 Fashion-MNIST training items themselves (28x28, the
same items the training scenes are composed of), then a segmenter or detector
starts from its layers (``zylax train --init-from``, ``train.warm_start``)::

    zylax train --model experiments.scene_trunk:classifier --recipe mobilenet_v2 \\
        --data fashion_mnist --out runs/scenes/trunk_sgd
    zylax train --net deeplabv3_mobilenet_v2 --data fashion_mnist_scenes --epochs 1 \\
        --init-from runs/scenes/trunk_sgd/model.zyl --out runs/scenes/deeplab_ct1

``--recipe mobilenet_v2`` is the registry's measured MobileNet V2 recipe (SGD
with Nesterov momentum, 10 epochs, 28x28 items padded to 32x32).

The layers are named as in the scene nets (``stem``, ``block0`` ...
``block16``), with the same width (0.35) and stem stride (2), so every trunk
kernel and its BatchNorm statistics carry over; ``last`` and ``classifier``
do not exist in DeepLabV3 and are left behind.
"""

from zylax.nets import MobileNetV2, TapConv


def classifier(num_classes: int) -> MobileNetV2:
    """MobileNet V2, width 0.35, stem stride 2: the scene nets' trunk with a classifier on top."""
    return MobileNetV2(width_multiplier=0.35, num_classes=num_classes, conv=TapConv)
