"""Batch normalisation while the SNN is fine-tuned, folded into its convolutions for the rest.

Conversion folds every BatchNorm into the convolution before it, so the spiking network trains
without normalisation. ``finetune.batch_norm=true`` puts a BatchNorm back after each of those
convolutions for the training steps only (statistics over the ``T * b`` samples of a pass, as
tdBN does over time and batch, Zheng et al. 2021; on CPU a pass holds 64 images at T=4,
:mod:`neurocuda.snn.chunking`): the batch statistics keep every layer's input current centred and
scaled while the weights move. It starts as the identity (its scale and shift set from one
batch's statistics of the convolution's output) and is folded into the convolution's weight and
bias, with its running statistics, wherever the network is used: validation, checkpoints, their
``.nir`` files and the test all see a plain integrate-and-fire network with folded weights, so
their figures and round trips are the exported network's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neurocuda.conversion.fold import folded_parameters
from neurocuda.snn import SpikingModel


def normalized_convolutions(snn: SpikingModel) -> dict[str, nn.Conv2d]:
    """The convolutions a BatchNorm was folded into (those with a bias), by name."""
    return {
        name: module
        for name, module in snn.network.named_modules()
        if isinstance(module, nn.Conv2d) and module.bias is not None
    }


class ConvNorms(nn.Module):
    """A ``BatchNorm2d`` for each convolution of :func:`normalized_convolutions`.

    :meth:`applied` puts them after their convolutions (forward hooks) for a training step,
    :meth:`calibrate` makes each start as the identity, :meth:`fold_into` writes them into a
    network's convolutions (the runtime network, no normalisation left). Held outside the spiking
    network, so that network keeps the module tree its checkpoints and NIR files describe.
    """

    def __init__(self, snn: SpikingModel, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        convs = normalized_convolutions(snn)
        if not convs:
            raise ValueError(
                "finetune.batch_norm=true needs convolutions with a folded BatchNorm (a bias); "
                "this network has none: set finetune.batch_norm=false."
            )
        self.names = list(convs)
        self.norms = nn.ModuleDict(
            {
                _key(name): nn.BatchNorm2d(conv.out_channels, eps=eps, momentum=momentum)
                for name, conv in convs.items()
            }
        )
        self.calibrated = False
        """Whether :meth:`calibrate` has run; until then the norms are not folded anywhere."""

    @contextmanager
    def applied(self, snn: SpikingModel) -> Iterator[None]:
        """Within: every normalised convolution of ``snn`` is followed by its norm."""
        convs = normalized_convolutions(snn)
        hooks = [convs[name].register_forward_hook(self._normalize(name)) for name in self.names]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def _normalize(self, name: str) -> Callable[..., torch.Tensor]:
        """A forward hook that passes the convolution ``name``'s output through its norm."""
        norm = self.norms[_key(name)]
        return lambda _module, _args, out: norm(out)

    @torch.no_grad()
    def calibrate(self, snn: SpikingModel, run: Callable[[], Any]) -> None:
        """Make each norm the identity for the outputs ``run()`` (a forward pass of ``snn``, not
        normalised) gives its convolution: scale ``sqrt(var + eps)``, shift and running mean the
        mean, running variance the variance (per channel, over samples and positions)."""
        moments: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}

        def record(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> None:
                # per pass: the network may run a batch in several (neurocuda.snn.chunking)
                values = out.double().transpose(0, 1).flatten(1)  # [C, samples x positions]
                count = values.new_full((len(values),), values.shape[1])
                moments[name].append(torch.stack([count, values.sum(1), values.square().sum(1)]))

            return hook

        convs = normalized_convolutions(snn)
        hooks = [convs[name].register_forward_hook(record(name)) for name in self.names]
        try:
            run()
        finally:
            for hook in hooks:
                hook.remove()
        for name in self.names:
            summed = torch.stack(moments[name]).sum(0)
            if dist.is_available() and dist.is_initialized():  # DDP: every process's batch, so
                dist.all_reduce(summed)  # all replicas start from the same norms (DDP never
            count, total, squares = summed  # broadcasts parameters after its start)
            mean = total / count
            var = (squares / count - mean.square()).clamp(min=0)
            norm = self.norms[_key(name)]
            norm.weight.copy_((var + norm.eps).sqrt())
            norm.bias.copy_(mean)
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        self.calibrated = True

    @torch.no_grad()
    def fold_into(self, snn: SpikingModel) -> SpikingModel:
        """Write each norm (its running statistics: the inference form) into its convolution of
        ``snn`` in place, as conversion folds its BatchNorms (:func:`~neurocuda.conversion.fold.
        folded_parameters`). Nothing to do before :meth:`calibrate`. Returns ``snn``."""
        if not self.calibrated:
            return snn
        convs = normalized_convolutions(snn)
        for name in self.names:
            conv = convs[name]
            weight, bias = folded_parameters(conv.weight, conv.bias, self.norms[_key(name)])
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        return snn


def _key(name: str) -> str:
    """A module name as a ``ModuleDict`` key (no dots)."""
    return name.replace(".", "__")
