"""The IF neuron's spike with a surrogate gradient, for training the spiking network itself.

Forward is the runtime's comparison (docs/semantics.md): ``s = (u > fire_level)`` as 0.0 / 1.0 in
``u``'s dtype, so a network trained with it computes exactly what the runtime and the NIR executor
compute. Backward replaces the step's derivative (zero almost everywhere) by a triangle centred on
``fire_level`` with half-width ``theta`` and height ``1 / theta``: its area is 1 (one spike), and it
scales with the layer's threshold, so layers with large and small thresholds learn alike (the
triangle surrogate of Esser et al. 2016 and Bellec et al. 2018).
"""

from __future__ import annotations

from typing import Any

import torch


def triangle_slope(
    u: torch.Tensor, fire_level: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """The surrogate derivative ``max(0, 1 - |u - fire_level| / theta) / theta`` (area 1)."""
    return (1 - (u - fire_level).abs() / threshold).clamp_(min=0) / threshold


class _TriangleSpike(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, fire_level: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(u, fire_level, threshold)
        return torch.gt(u, fire_level).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, fire_level, threshold = ctx.saved_tensors
        grad_u = grad * triangle_slope(u, fire_level, threshold)
        grad_fire = (-grad_u).sum_to_size(fire_level.shape) if ctx.needs_input_grad[1] else None
        return grad_u, grad_fire, None


def spike(u: torch.Tensor, fire_level: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``(u > fire_level)`` as floats; gradient: triangle of half-width ``threshold`` (area 1).

    ``fire_level`` and ``threshold`` broadcast to ``u``; ``fire_level`` receives minus the
    membrane's gradient, ``threshold`` only sets the surrogate's width (no gradient through it).
    """
    return _TriangleSpike.apply(u, fire_level, threshold)
