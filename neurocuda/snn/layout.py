"""One memory-layout policy for the float spiking runtimes: the native :class:`SpikingModel`, the
NIR :class:`~neurocuda.nir.Executor` and the deployment backends built on it.

A convolution's result depends on the memory layout it runs in (on CPU, oneDNN's channels-last
kernels sum in another order than its standard ones, ~1e-6 apart), so every side of the NIR round
trip must run each convolution in the same layout to agree bit for bit. The layout follows the
device: on CPU channels-last (``[N, C, H, W]`` stored as ``N, H, W, C``), 1.4-1.8x faster for the
spiking networks' convolutions on binary input than the standard layout (docs/results.md); on other
devices the standard layout. Conv weights (4-D) and 4-D activations are held in it
(:func:`apply_layout`, :func:`to_layout`); elementwise ops, pooling and the convolutions keep it,
and per-step buffers are allocated in it (:func:`empty_steps`).
"""

from __future__ import annotations

import torch
from torch import nn


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of conv weights and 4-D activations on ``device``."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def to_layout(x: torch.Tensor, fmt: torch.memory_format | None = None) -> torch.Tensor:
    """``x`` (``[N, C, H, W]`` or time-major ``[T, B, C, H, W]``) in layout ``fmt`` (default: its
    device's); other shapes unchanged. Returns ``x`` itself when it is already laid out so."""
    if x.dim() not in (4, 5):
        return x
    fmt = memory_format(x.device) if fmt is None else fmt
    if x.dim() == 4:
        return x.contiguous(memory_format=fmt)
    rows = x.flatten(0, 1)  # a view when x's rows are dense and laid out alike
    if rows.is_contiguous(memory_format=fmt):
        return x
    return rows.contiguous(memory_format=fmt).unflatten(0, x.shape[:2])


def empty_steps(like: torch.Tensor, steps: int) -> torch.Tensor:
    """An uninitialized ``[steps, *like.shape]`` buffer whose rows have ``like``'s layout, so
    that ``buffer.flatten(0, 1)`` is a view in that layout too."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        rows = torch.empty(
            (steps * like.shape[0], *like.shape[1:]),
            dtype=like.dtype,
            device=like.device,
            memory_format=torch.channels_last,
        )
        return rows.unflatten(0, (steps, like.shape[0]))
    return torch.empty((steps, *like.shape), dtype=like.dtype, device=like.device)


def apply_layout(module: nn.Module, fmt: torch.memory_format | None = None) -> None:
    """Store every 4-D ``weight`` (the conv weights) of ``module``'s submodules in layout ``fmt``
    (default: the layout of its device), in place (parameters stay the same objects)."""
    for sub in module.modules():
        weight = getattr(sub, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            continue
        layout = memory_format(weight.device) if fmt is None else fmt
        if not weight.is_contiguous(memory_format=layout):
            with torch.no_grad():
                weight.data = weight.data.contiguous(memory_format=layout)
