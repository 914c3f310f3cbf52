"""Structural fan-out: how many synapses leave each source neuron of a layer (zeros count).

One implementation for the SNN runtime's spike monitor (:func:`fan_out`, on torch modules) and the
deploy targets (:func:`fan_out_map`, on folded projections).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fan_out_map(
    kind: str,
    weight_shape: tuple[int, ...],
    source_shape: tuple[int, ...],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] | str = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-source-neuron synapse count (``source_shape``, int64) of a ``dense`` or ``conv`` layer.

    Dense: every source neuron reaches all ``N_out`` targets. Conv: the gradient of the summed
    output of an all-ones kernel counts, for each input position, the outputs whose receptive
    field covers it (borders and strides included).
    """
    if kind == "dense":
        return torch.full(source_shape, weight_shape[0], dtype=torch.int64, device=device)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.zeros(1, *source_shape, device=device, requires_grad=True)
        kernel = torch.ones(weight_shape, device=device)
        out = F.conv2d(x, kernel, None, stride, padding, dilation, groups)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[0].round().to(torch.int64)


def fan_out(module: nn.Module, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """How many outputs each input element of one sample reaches (float, ``sample_shape``) for an
    ``nn.Linear``, ``nn.Conv2d`` or ``nn.AvgPool2d`` (a depthwise all-ones kernel of its size)."""
    if isinstance(module, nn.Linear):
        fan = fan_out_map("dense", (module.out_features,), sample_shape)
    elif isinstance(module, nn.Conv2d):
        fan = fan_out_map(
            "conv", tuple(module.weight.shape), sample_shape, module.stride, module.padding,
            module.dilation, module.groups,
        )  # fmt: skip
    else:
        kernel = nn.modules.utils._pair(module.kernel_size)
        fan = fan_out_map(
            "conv", (sample_shape[0], 1, *kernel), sample_shape, module.stride or kernel,
            module.padding, groups=sample_shape[0],
        )  # fmt: skip
    return fan.to(torch.get_default_dtype())
