"""Structural fan-out of a synapse layer: how many synapses leave each source neuron."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fan_out_map(
    kind: str,
    weight_shape: tuple[int, ...],
    source_shape: tuple[int, ...],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-source-neuron synapse count (``source_shape``, int64); zeros inside kernels count.

    Dense: every source neuron reaches all ``N_out`` targets. Conv: the transposed convolution of
    an all-ones output with an all-ones kernel counts, for each input position, the outputs whose
    receptive field covers it (borders and strides included).
    """
    if kind == "dense":
        return torch.full(source_shape, weight_shape[0], dtype=torch.int64, device=device)
    kernel = torch.ones(weight_shape, device=device)
    ones = torch.ones(1, *source_shape, device=device)
    out = F.conv2d(ones, kernel, None, stride, padding, dilation, groups)
    fan = F.conv_transpose2d(
        torch.ones_like(out), kernel, None, stride, padding, 0, groups, dilation
    )
    pad_h, pad_w = source_shape[1] - fan.shape[2], source_shape[2] - fan.shape[3]
    return F.pad(fan, (0, pad_w, 0, pad_h))[0].round().to(torch.int64)
