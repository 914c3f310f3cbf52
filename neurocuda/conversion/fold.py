"""Stage 2: fold each BatchNorm into the conv/linear layer before it (exact in eval mode)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def folded_parameters(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one layer computing ``bn(layer(x))`` (``layer``: ``weight``, ``bias``,
    None for none) with BN's running statistics: the one folding formula, for conversion and for
    the fine-tuning stage's batch norms."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded.")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    per_output = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight * per_output, bias * scale + shift


@torch.no_grad()
def folded_layer(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Module:
    """A new layer with bias computing ``bn(layer(x))`` with BN's running statistics."""
    weight, bias = folded_parameters(layer.weight, layer.bias, bn)
    if isinstance(layer, nn.Conv2d):
        new: nn.Module = nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, bias=True,
            padding_mode=layer.padding_mode,
        )  # fmt: skip
    else:
        new = nn.Linear(layer.in_features, layer.out_features, bias=True)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.weight.copy_(weight.contiguous())
    new.bias.copy_(bias)
    return new


def fold_batchnorms(model: nn.Module, batchnorm_of: dict[str, str]) -> None:
    """Fold in place: each BN name -> its layer name; the BN becomes ``nn.Identity``."""
    for bn_name, layer_name in batchnorm_of.items():
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        model.set_submodule(layer_name, folded_layer(layer, bn))
        model.set_submodule(bn_name, nn.Identity())
