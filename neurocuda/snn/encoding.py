"""Input encodings: direct (the analog image at every step) or Poisson (Bernoulli spikes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from neurocuda.normalization import CIFAR10_MEAN, CIFAR10_STD

Encoding = Literal["direct", "poisson"]


def poisson_encode(
    x: torch.Tensor,
    timesteps: int,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spike trains ``[T, B, C, H, W]`` for normalized images ``x`` ``[B, C, H, W]``.

    Each pixel's intensity ``p = x * std + mean`` (clipped to [0, 1]) is its firing probability per
    step. The spikes ``s`` are returned normalized, ``(s - mean) / std``, so their expectation is
    the normalized image the network was trained on.
    """
    shape = (1, -1, *([1] * (x.dim() - 2)))
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    prob = (x * std_t + mean_t).clamp(0.0, 1.0).expand(timesteps, *x.shape)
    spikes = torch.bernoulli(prob, generator=generator)
    return (spikes - mean_t) / std_t


def encode(
    x: torch.Tensor,
    timesteps: int,
    encoding: Encoding,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x`` itself for direct encoding (constant current), Poisson spike trains otherwise (drawn
    under ``mean`` and ``std``, the data's normalization: ``train.py`` and ``scripts/deploy.py``
    reject Poisson runs with another data.mean / data.std before they start)."""
    if encoding == "direct":
        return x
    if encoding == "poisson":
        return poisson_encode(x, timesteps, mean, std, generator)
    raise ValueError(f"conversion.encoding={encoding!r}: use direct or poisson.")
