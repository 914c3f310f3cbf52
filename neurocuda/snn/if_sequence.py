"""A whole layer of IF neurons (reset by subtraction) over T steps: the runtime's float loop, and
the same loop as one autograd node for backprop through time.

:func:`integrate_and_fire` is the one implementation of the loop (docs/semantics.md); the inference
runtime runs it in a reused work buffer, :func:`if_sequence` keeps every step's membrane for the
backward pass. Written by hand rather than left to autograd because autograd records ~5 nodes per
step and layer and allocates each intermediate: a backward written out for the whole sequence
(gradients of the membrane chain in two passes per step, the surrogate slopes of all steps at once)
trains faster and holds less memory, while the forward stays the runtime's, bit for bit. On CPU,
for channels-last float tensors, both directions run in :mod:`~neurocuda.snn.cpu_kernel`'s loops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from neurocuda.snn import cpu_kernel
from neurocuda.snn.layout import empty_steps
from neurocuda.snn.surrogate import Surrogate, triangle_slope


def integrate_and_fire(
    x: torch.Tensor,
    fire_level: torch.Tensor,
    neg_threshold: torch.Tensor,
    spikes: torch.Tensor,
    membranes: torch.Tensor,
    recurrent: torch.Tensor,
) -> None:
    """Run ``x`` (``[T, B, ...]``) from a zero state into ``spikes`` (``[T, B, ...]``).

    ``membranes`` is ``[T, B, ...]`` (every step's membrane is kept) or, for ``T > 1``,
    ``[1, B, ...]`` (one row, overwritten); ``recurrent`` is scratch of one step's shape.

    Float addition is commutative bit for bit, so ``u + ((-theta) * s + x)`` is exactly the
    contract's ``u + (x + (-theta) * s)``; ``addcmul`` forms it in one pass, and as ``s`` is 0 or
    1 the product is exact, so the one rounding is the addition's (fused multiply-add or not).
    The membrane starts as ``u_0 = x_0`` instead of the contract's ``0 + (x_0 + (-theta) * 0)``:
    the two differ at most in the sign of a zero, and so do all later membranes (``a + b`` only
    depends on the signs of zeros when it is a zero itself), which no comparison sees, so every
    spike is the contract's; this saves the zero fills and two passes at ``t = 0``.
    """
    keep = membranes.shape[0] == x.shape[0]
    u = membranes[0].copy_(x[0]) if keep else x[0]
    torch.gt(u, fire_level, out=spikes[0])
    for t in range(1, x.shape[0]):
        torch.addcmul(x[t], spikes[t - 1], neg_threshold, out=recurrent)
        u = torch.add(u, recurrent, out=membranes[t if keep else 0])
        torch.gt(u, fire_level, out=spikes[t])


def _per_layer(per_channel: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Channel sums ``[C]`` as the gradient of a ``[]``, ``[C]`` or ``[C, 1, 1]`` parameter."""
    return (per_channel.sum() if like.numel() == 1 else per_channel).reshape(like.shape)


class _IFSequence(torch.autograd.Function):
    """The loop in tensor operations (any device, dtype and layout)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        threshold: torch.Tensor,
        fire_level: torch.Tensor,
        surrogate: Surrogate,
    ) -> torch.Tensor:
        spikes = empty_steps(x[0], x.shape[0])
        membranes = empty_steps(x[0], x.shape[0])
        scratch = torch.empty_like(x[0])
        integrate_and_fire(x, fire_level, -threshold, spikes, membranes, scratch)
        ctx.save_for_backward(spikes, membranes, threshold, fire_level)
        ctx.surrogate = surrogate
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """With ``g_t = dL/du_t``: ``g_t = g_{t+1} + (dL/ds_t + r g_{t+1}) slope_t``
        (``g_T = 0``; ``r = -theta``, or ``Surrogate.reset_gain``); ``dL/dx_t = g_t``,
        ``dL/dtheta = -sum_t g_{t+1} s_t`` (the reset; the surrogate's width takes no gradient)
        and ``dL/dfire_level = -sum_t (dL/ds_t + r g_{t+1}) slope_t = -g_0`` (the sum
        telescopes)."""
        spikes, membranes, threshold, fire_level = ctx.saved_tensors
        slopes = triangle_slope(membranes, fire_level, ctx.surrogate.half_width(threshold))
        neg_threshold = ctx.surrogate.reset_gain(threshold)
        grad_u = empty_steps(grad[0], grad.shape[0])
        total = torch.empty_like(grad[0])
        last = grad.shape[0] - 1
        torch.mul(grad[last], slopes[last], out=grad_u[last])
        for t in range(last - 1, -1, -1):
            torch.addcmul(grad[t], grad_u[t + 1], neg_threshold, out=total)
            torch.addcmul(grad_u[t + 1], total, slopes[t], out=grad_u[t])
        grad_threshold = grad_fire = None
        if ctx.needs_input_grad[1]:
            reset = (grad_u[1:] * spikes[:-1]).sum(0).sum_to_size(threshold.shape)
            grad_threshold = reset.neg_()
        if ctx.needs_input_grad[2]:
            grad_fire = grad_u[0].sum_to_size(fire_level.shape).neg()
        return grad_u, grad_threshold, grad_fire, None


class _KernelIFSequence(torch.autograd.Function):
    """The loop and the scale after it in :mod:`~neurocuda.snn.cpu_kernel`'s loops (CPU, float,
    channels last): no spike tensor is kept, nor a product with the scale made apart."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        threshold: torch.Tensor,
        fire_level: torch.Tensor,
        scale: torch.Tensor,
        surrogate: Surrogate,
    ) -> torch.Tensor:
        out = empty_steps(x[0], x.shape[0])
        membranes = empty_steps(x[0], x.shape[0])
        cpu_kernel.integrate_and_fire_kept(x, fire_level, -threshold, scale, out, membranes)
        ctx.save_for_backward(membranes, threshold, fire_level, scale)
        ctx.surrogate = surrogate
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """``_IFSequence.backward`` with ``dL/ds_t = scale * dL/dy_t`` for the output ``y_t =
        scale * s_t``, and ``dL/dscale = sum_t s_t dL/dy_t``."""
        membranes, threshold, fire_level, scale = ctx.saved_tensors
        surrogate = ctx.surrogate
        grad_u, resets, fires, scaled = cpu_kernel.if_backward(
            grad,
            membranes,
            fire_level,
            surrogate.half_width(threshold),
            scale,
            surrogate.reset_gain(threshold),
        )
        wanted = ctx.needs_input_grad
        return (
            grad_u,
            _per_layer(-resets, threshold) if wanted[1] else None,
            _per_layer(-fires, fire_level) if wanted[2] else None,
            _per_layer(scaled, scale) if wanted[3] else None,
            None,
        )


DEFAULT_SURROGATE = Surrogate()


def if_sequence(
    x: torch.Tensor,
    threshold: torch.Tensor,
    fire_level: torch.Tensor,
    compiled: bool = True,
    scale: torch.Tensor | None = None,
    surrogate: Surrogate = DEFAULT_SURROGATE,
) -> torch.Tensor:
    """Spikes ``[T, B, ...]`` of IF neurons with reset by subtraction for input ``x`` (``[T, B,
    ...]``), differentiable in ``x``, ``threshold`` (through the reset) and ``fire_level``, with
    :func:`~neurocuda.snn.spike`'s triangle surrogate at the threshold; times ``scale`` (the
    :class:`~neurocuda.snn.Scale` after the layer, differentiable too) when given. ``compiled``:
    on CPU in :mod:`~neurocuda.snn.cpu_kernel` where it applies, the scale in the same pass.
    ``surrogate``: the backward's settings (:class:`~neurocuda.snn.surrogate.Surrogate`)."""
    constants = (threshold, fire_level) if scale is None else (threshold, fire_level, scale)
    if compiled and cpu_kernel.applies(x, *constants):
        one = torch.ones((), dtype=x.dtype) if scale is None else scale
        return _KernelIFSequence.apply(x, threshold, fire_level, one, surrogate)
    spikes = _IFSequence.apply(x, threshold, fire_level, surrogate)
    return spikes if scale is None else spikes * scale
