"""Stage 3: choose an IF threshold for every activation.

ReLU layers: a robust percentile of the activation values seen on calibration batches (Rueckauer et
al. 2017), per layer or per channel, averaged over batches. QCFS layers: the learned threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
from torch import nn

from neurocuda.batches import first_images
from neurocuda.conversion.errors import ConversionError
from neurocuda.conversion.validate import check_image_shape
from neurocuda.models.qcfs import QCFS

log = logging.getLogger(__name__)


def percentile(values: torch.Tensor, q: float, per_channel: bool) -> torch.Tensor:
    """``q``-th percentile of ``values`` ``[N, C, ...]``: overall (``[]``) or per channel (``[C]``).

    ``kthvalue`` instead of ``torch.quantile``: quantile refuses inputs above 2**24 elements.
    """
    flat = (
        values.transpose(0, 1).reshape(values.shape[1], -1)
        if per_channel
        else values.reshape(1, -1)
    )
    k = min(flat.shape[1], max(1, math.ceil(q / 100.0 * flat.shape[1])))
    result = flat.float().kthvalue(k, dim=1).values
    return result if per_channel else result[0]


@torch.no_grad()
def calibrate_relu_thresholds(
    model: nn.Module,
    names: list[str],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | Iterable[torch.Tensor],
    num_batches: int,
    q: float,
    per_channel: bool,
    input_shape: tuple[int, ...],
) -> dict[str, torch.Tensor]:
    """Mean over ``num_batches`` of each ReLU layer's ``q``-th output percentile (images of
    ``input_shape``)."""
    if not 0 < q <= 100:
        raise ConversionError(f"conversion.calibration.percentile={q} must be in (0, 100].")
    sums: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: sums.__setitem__(
                name, sums.get(name, 0) + percentile(out, q, per_channel)
            )
        )
        for name in names
    ]
    device = next(model.parameters()).device
    seen = 0
    try:
        for x in first_images(batches, num_batches):
            check_image_shape(x, input_shape)
            model(x.to(device))
            seen += 1
    finally:
        for hook in hooks:
            hook.remove()
    if seen == 0:
        raise ConversionError("Calibration needs at least one batch; the data loader was empty.")
    return {name: _positive(name, total / seen) for name, total in sums.items()}


def _positive(name: str, threshold: torch.Tensor) -> torch.Tensor:
    """Replace thresholds of never-active channels (0) by the layer's largest threshold."""
    dead = threshold <= 0
    if bool(dead.all()):
        log.warning("Layer %s never activated during calibration; threshold set to 1.0.", name)
        return torch.ones_like(threshold)
    if bool(dead.any()):
        log.warning(
            "Layer %s: %d channel(s) never activated during calibration; they get the layer's "
            "largest threshold.", name, int(dead.sum()),
        )  # fmt: skip
        threshold = torch.where(dead, threshold.max(), threshold)
    return threshold


def qcfs_thresholds(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The learned QCFS thresholds (each > 0)."""
    result = {}
    for name in names:
        layer = model.get_submodule(name)
        if not bool(layer.initialized):
            raise ConversionError(
                f"QCFS layer {name!r} was never trained: its threshold is still a placeholder, "
                "set from the first training batch. Train the model (or pass threshold=...)."
            )
        theta = layer.threshold.detach().clone()
        if float(theta) <= 0:  # its clip then maps every input to <= 0: no IF neuron does that
            raise ConversionError(
                f"QCFS layer {name!r} learned threshold {float(theta):.4g} <= 0, which no IF "
                "neuron reproduces; retrain it (a lower +model.optimizer.clip_lr_scale keeps the "
                "clip levels from crossing zero)."
            )
        result[name] = theta
    return result


def split_by_kind(model: nn.Module, names: list[str]) -> tuple[list[str], list[str]]:
    """Activation names split into (ReLU, QCFS)."""
    qcfs = [n for n in names if isinstance(model.get_submodule(n), QCFS)]
    return [n for n in names if n not in qcfs], qcfs
