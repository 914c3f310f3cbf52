"""Training-time weight noise as large as a few-bit grid's rounding (finetune.weight_noise_bits).

Hardware stores weights as few-bit mantissas: loihi2 keeps 8-bit ones, with an exponent per
projection and a power-of-two gain per output channel (neurocuda/deploy/loihi2/quantize.py), so
every weight moves by up to half a step of a power-of-two grid that covers its channel's largest
weight. Fine-tuning under that much uniform noise, drawn anew at every step, aims at a network whose
accuracy tolerates the move (on the ResNet-20 recipe no effect was measurable, docs/results.md).
Gradients reach the clean weights unchanged (the noise is added, not learned); validation,
checkpoints and ``.nir`` files hold the clean weights, so the forward pass that is exported and
deployed is the runtime's, as without the option.
"""

from __future__ import annotations

import torch

WEIGHT_NOISE_BITS = (2, 16)
"""The grid widths (signed mantissa bits, inclusive) ``finetune.weight_noise_bits`` accepts."""


def check_weight_noise_bits(bits: int | None) -> None:
    """Fail unless ``bits`` is None (off) or a mantissa width in :data:`WEIGHT_NOISE_BITS`."""
    low, high = WEIGHT_NOISE_BITS
    if bits is not None and not (isinstance(bits, int) and low <= bits <= high):
        raise ValueError(
            f"finetune.weight_noise_bits={bits!r} must be an integer from {low} to {high} (the "
            "signed mantissa bits of the deployed weights, 8 for loihi2), or null for no noise."
        )


def grid_steps(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per output channel (``weight``'s first dimension), the smallest power of two whose signed
    ``bits``-bit grid (mantissas up to ``2**(bits - 1) - 1``) covers the channel's largest weight
    (0 for an all-zero channel); shaped to broadcast against ``weight``."""
    top = 2 ** (bits - 1) - 1
    peak = weight.detach().float().abs().reshape(weight.shape[0], -1).amax(dim=1)
    steps = torch.where(peak > 0, torch.exp2(torch.ceil(torch.log2(peak / top))), 0.0)
    return steps.reshape(-1, *([1] * (weight.dim() - 1)))


def with_grid_noise(
    weight: torch.Tensor, bits: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``weight`` plus uniform noise in ``[-step/2, step/2)`` of its channel's grid step
    (:func:`grid_steps`), drawn from ``generator``; the gradient with respect to ``weight`` is
    the identity."""
    uniform = torch.rand(
        weight.shape, generator=generator, device=weight.device, dtype=torch.float32
    )
    noise = (uniform - 0.5) * grid_steps(weight, bits)
    return weight + noise.to(weight.dtype)
