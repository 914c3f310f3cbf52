"""CIFAR ResNets (3x3 stem, no max pooling) with module-level residual adds."""

from __future__ import annotations

import torch
from torch import nn

from neurocuda.models.layers import ActivationFactory, Add, conv_bn


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn (+ shortcut) -> act, the add being an :class:`Add` module."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, act: ActivationFactory, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, 3, stride)
        self.act1 = act()
        self.conv2, self.bn2 = conv_bn(c_out, c_out, 3, 1)
        if zero_init:  # the residual branch starts at zero: the block is its shortcut at step 0
            nn.init.zeros_(self.bn2.weight)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
        else:
            self.shortcut = nn.Identity()
        self.add = Add()
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(self.add(out, self.shortcut(x)))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs: stem, stages of basic blocks, global average pool, linear head.

    ``zero_init_residual``: every block's last BatchNorm scale starts at 0 (Goyal et al. 2017), so
    the untrained net is its shortcuts; an option for short schedules (figures in docs/results.md).
    """

    def __init__(
        self,
        widths: list[int],
        blocks: list[int],
        act: ActivationFactory,
        num_classes: int = 10,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, widths[0], 3, 1), act())
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, width, stride, act, zero_init_residual))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet18(
    act: ActivationFactory, num_classes: int = 10, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-18 with a CIFAR stem (11.2 M parameters)."""
    return ResNet([64, 128, 256, 512], [2, 2, 2, 2], act, num_classes, zero_init_residual)


def resnet20(
    act: ActivationFactory, num_classes: int = 10, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-20 of He et al. for CIFAR (0.27 M parameters)."""
    return ResNet([16, 32, 64], [3, 3, 3], act, num_classes, zero_init_residual)
