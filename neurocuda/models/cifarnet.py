"""CifarNet: a CPU-scale, conversion-friendly CIFAR-10 network.

Design (our own, tuned for 2 CPU cores): a 3x3 stem, then three stages that each run one conv at
the incoming resolution, halve it with average pooling and run a second conv; global average
pooling and a linear head. Average pooling and BN-folded convs map one-to-one onto spiking layers
and NIR nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neurocuda.models.layers import ActivationFactory, conv_bn


def cifarnet(
    act: ActivationFactory,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128, 256),
) -> nn.Sequential:
    """Build CifarNet; ``widths`` are the stem and three stage widths."""
    stem, *stages = widths
    layers: list[nn.Module] = [*conv_bn(3, stem), act()]
    c_in = stem
    for width in stages:
        layers += [*conv_bn(c_in, width), act(), nn.AvgPool2d(2), *conv_bn(width, width), act()]
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)
