"""Building blocks every model uses so that conversion and NIR export can see them as modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Add(nn.Module):
    """Residual addition as a module, so tracers and converters see the merge point."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


ActivationFactory = Callable[[], nn.Module]

_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {"relu": nn.ReLU}


def register_activation(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` selectable as ``model.activation=<name>``."""
    _ACTIVATIONS[name] = factory


def activation_factory(name: str, **kwargs: object) -> ActivationFactory:
    """Return a zero-argument constructor for the activation called ``name``."""
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)} "
            "(set model.activation=...)."
        )
    factory = _ACTIVATIONS[name]
    return lambda: factory(**kwargs)


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """Conv (no bias, BN supplies it) followed by BatchNorm."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
