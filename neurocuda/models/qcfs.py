"""QCFS: quantization-clip-floor-shift activation (Bu et al., ICLR 2022), ``model.activation=qcfs``.

``y = theta * clip(floor(x * L / theta + 1/2) / L, 0, 1)`` with a learned threshold ``theta`` per
layer and ``L`` levels; the floor passes gradients straight through. An IF neuron with threshold
``theta`` and initial membrane ``theta / 2`` reproduces it in expectation, so conversion uses the
learned ``theta`` as the IF threshold.
"""

from __future__ import annotations

import torch
from torch import nn

from neurocuda.models.layers import register_activation


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity gradient (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


class QCFS(nn.Module):
    """Trainable quantized clip activation with ``levels`` steps up to a learned ``threshold``."""

    def __init__(self, levels: int = 8, threshold: float = 8.0) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}.")
        if threshold <= 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}.")
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.threshold
        steps = floor_ste(x / theta * self.levels + 0.5) / self.levels
        return torch.clamp(steps, 0.0, 1.0) * theta

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


register_activation("qcfs", QCFS)
