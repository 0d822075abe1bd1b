"""Flax linen image models. They know nothing about compression."""

from zylax.nets.deeplab import DeepLabV3, DeepLabV3Small
from zylax.nets.layers import TapConv
from zylax.nets.lenet import LeNet300100, LeNet5, param_count
from zylax.nets.mlp import MLP
from zylax.nets.mobilenet import MobileNetV1, MobileNetV2, make_divisible
from zylax.nets.rescaled import Rescaled
from zylax.nets.sepnet import SEPNet
from zylax.nets.squeezenet import SqueezeNet, SqueezeNet1_0, SqueezeNet1_1
from zylax.nets.ssdlite import SSDLite, SSDLiteSmall
from zylax.nets.summary import Summary, summary

__all__ = ["DeepLabV3", "DeepLabV3Small", "LeNet300100", "LeNet5", "MLP", "MobileNetV1",
           "MobileNetV2", "Rescaled", "SEPNet", "SSDLite", "SSDLiteSmall", "SqueezeNet",
           "SqueezeNet1_0", "SqueezeNet1_1", "Summary", "TapConv", "make_divisible",
           "param_count", "summary"]
