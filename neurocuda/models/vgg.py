"""VGG-16 for CIFAR with average pooling (max pooling has no exact spiking equivalent)."""

from __future__ import annotations

from torch import nn

from neurocuda.models.layers import ActivationFactory, conv_bn

_VGG16 = [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"]


def vgg16(act: ActivationFactory, num_classes: int = 10) -> nn.Sequential:
    """VGG-16 (13 conv + BN + act, 5 average pools) with a single linear classifier."""
    layers: list[nn.Module] = []
    c_in = 3
    for item in _VGG16:
        if item == "P":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [*conv_bn(c_in, int(item)), act()]
            c_in = int(item)
    layers += [nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
