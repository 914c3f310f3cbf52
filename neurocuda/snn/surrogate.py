"""The IF neuron's spike with a surrogate gradient, for training the spiking network itself.

Forward is the runtime's comparison (docs/semantics.md): ``s = (u > fire_level)`` as 0.0 / 1.0 in
``u``'s dtype, so a network trained with it computes exactly what the runtime and the NIR executor
compute. Backward replaces the step's derivative (zero almost everywhere) by a triangle centred on
``fire_level`` with half-width ``theta`` and height ``1 / theta``: its area is 1 (one spike), and it
scales with the layer's threshold, so layers with large and small thresholds learn alike (the
triangle surrogate of Esser et al. 2016 and Bellec et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Surrogate:
    """How backprop through time treats the spike; training only, the forward pass and the
    spikes are the same whatever it says.

    ``width``: the triangle's half-width in thresholds (``width * theta``, height ``1 / (width *
    theta)``, so its area stays 1). ``detach_reset``: the reset's gradient through the spike is
    left out, ``d u_{t+1} / d s_t = 0`` instead of ``-theta``: a spike's surrogate gradient then
    reaches the loss only through the layers after it, not back through its own membrane (Zenke
    & Vogels 2021); the threshold keeps its gradient through the reset's value.
    """

    width: float = 1.0
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(
                f"finetune.surrogate_width={self.width} must be > 0: the surrogate's half-width "
                "in thresholds (1.0: theta)."
            )

    def half_width(self, threshold: torch.Tensor) -> torch.Tensor:
        """The triangle's half-width for a layer with this ``threshold``."""
        return threshold * self.width

    def reset_gain(self, threshold: torch.Tensor) -> torch.Tensor:
        """``d u_{t+1} / d s_t`` in the backward pass: ``-threshold``, or 0 with the reset
        detached."""
        return torch.zeros_like(threshold) if self.detach_reset else -threshold


def triangle_slope(
    u: torch.Tensor, fire_level: torch.Tensor, half_width: torch.Tensor
) -> torch.Tensor:
    """The surrogate derivative ``max(0, 1 - |u - fire_level| / w) / w`` (area 1) for the
    half-width ``w`` (theta, or :meth:`Surrogate.half_width`)."""
    return (1 - (u - fire_level).abs() / half_width).clamp_(min=0) / half_width


class _TriangleSpike(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, fire_level: torch.Tensor, half_width: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(u, fire_level, half_width)
        return torch.gt(u, fire_level).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, fire_level, half_width = ctx.saved_tensors
        grad_u = grad * triangle_slope(u, fire_level, half_width)
        grad_fire = (-grad_u).sum_to_size(fire_level.shape) if ctx.needs_input_grad[1] else None
        return grad_u, grad_fire, None


def spike(u: torch.Tensor, fire_level: torch.Tensor, half_width: torch.Tensor) -> torch.Tensor:
    """``(u > fire_level)`` as floats; gradient: triangle of ``half_width`` (area 1), the
    layer's threshold or :meth:`Surrogate.half_width` of it.

    ``fire_level`` and ``half_width`` broadcast to ``u``; ``fire_level`` receives minus the
    membrane's gradient, ``half_width`` only sets the surrogate's width (no gradient through it).
    """
    return _TriangleSpike.apply(u, fire_level, half_width)
