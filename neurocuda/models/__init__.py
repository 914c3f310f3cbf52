"""ANN definitions built for conversion; :func:`build_model` picks one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from neurocuda.models.cifarnet import cifarnet
from neurocuda.models.layers import Add, activation_factory, register_activation
from neurocuda.models.resnet import resnet18, resnet20
from neurocuda.models.vgg import vgg16

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "cifarnet": cifarnet,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "vgg16": vgg16,
}


def build_model(
    arch: str,
    num_classes: int = 10,
    activation: str = "relu",
    activation_kwargs: dict[str, Any] | None = None,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build architecture ``arch`` with activation ``activation`` (e.g. ``relu`` or ``qcfs``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown model {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    act = activation_factory(activation, **(activation_kwargs or {}))
    return ARCHITECTURES[arch](act, num_classes=num_classes, **arch_kwargs)


__all__ = ["ARCHITECTURES", "Add", "build_model", "register_activation"]
import neurocuda.models.qcfs  # noqa: E402, F401  (registers model.activation=qcfs)
