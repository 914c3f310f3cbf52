"""The multi-step spiking model returned by the converter (see docs/semantics.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import torch
from torch import nn

from neurocuda.snn.chunking import sub_batch_size
from neurocuda.snn.layout import apply_layout, to_layout
from neurocuda.snn.neurons import (
    IFNeuron,
    MultiStepModule,
    OutputIntegrator,
    SpikingActivation,
)


@dataclass(frozen=True)
class LayerSpikes:
    """Spikes one IF layer emitted during the last call."""

    name: str
    spikes: float
    neurons: int
    """Neurons of the layer per sample."""
    timesteps: int
    samples: int
    """Images in the batch."""

    @property
    def rate(self) -> float:
        """Mean spikes per neuron per time step."""
        return self.spikes / max(1, self.neurons * self.timesteps * self.samples)


class SpikingModel(nn.Module):
    """A converted network run for T steps; returns the output trace ``[T, B, classes]``.

    ``network`` keeps the ANN's module tree: BatchNorm folded (left as ``nn.Identity``), each
    activation replaced by a :class:`SpikingActivation` ``(IFNeuron, Scale)``, residual ``Add``
    modules kept and the final Linear wrapped as ``nn.Sequential(Linear, OutputIntegrator)``.
    Stateless layers run on the ``T * B`` samples; for a constant input ``[B, C, H, W]`` the
    layers before the first neuron run once on the ``B`` images. State is reset at every call.

    Conv weights and 4-D activations are held in the layout of :mod:`neurocuda.snn.layout` (the
    NIR executor's), re-applied whenever the model moves to another device or dtype.
    """

    def __init__(self, network: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> None:
        super().__init__()
        self.network = network
        self.input_shape = tuple(input_shape)
        """Shape of one sample without batch and time, e.g. ``(3, 32, 32)``."""
        self._last_shape: tuple[int, int] | None = None
        self._counted = False
        self.count_spikes = False
        """Count each IF layer's spikes in a call (:meth:`spike_counts`; a pass over every
        layer's spikes, 2-5% of a CifarNet run at T=8 on CPU, so off unless asked for:
        :class:`~neurocuda.metrics.SpikeMonitor` turns it on)."""
        self.fuse_activations = True
        """Run each :class:`SpikingActivation` fused, with the average pooling right after it
        where there is one (same outputs, faster on CPU); False runs the modules one by one
        (for comparison)."""
        self.compiled_kernel = True
        """Run the IF layers on CPU in :mod:`~neurocuda.snn.cpu_kernel`'s loops (same spikes,
        faster inference and fine-tuning); False: in tensor operations (for comparison)."""
        apply_layout(self.network)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)
        apply_layout(self.network)
        return self

    def forward(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        """Run ``x`` (``[B, *input_shape]`` constant current or ``[T, B, *input_shape]``).

        The batch runs in passes of :func:`~neurocuda.snn.chunking.sub_batch_size` images (all at
        once except on CPU; larger ones when building a graph); spike counts (with
        ``count_spikes``) cover the whole batch.
        """
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}.")
        if x.dim() == len(self.input_shape) + 2:
            if x.shape[0] != timesteps:
                raise ValueError(f"Input has {x.shape[0]} steps but timesteps={timesteps}.")
            batch_dim = 1
        elif x.dim() == len(self.input_shape) + 1:
            batch_dim = 0
        else:
            raise ValueError(
                f"Input of shape {tuple(x.shape)} does not match [B, *{self.input_shape}] or "
                f"[T, B, *{self.input_shape}]."
            )
        sample = tuple(x.shape[batch_dim + 1 :])
        if sample != tuple(self.input_shape):
            raise ValueError(
                f"Input of shape {tuple(x.shape)}: each sample is {sample}, but this network was "
                f"converted for {tuple(self.input_shape)}."
            )
        batch = x.shape[batch_dim]
        neurons = list(self.neuron_layers().values())
        for neuron in neurons:
            neuron.count_spikes = self.count_spikes
            neuron.compiled_kernel = self.compiled_kernel
        counts = [torch.zeros((), device=x.device) for _ in neurons]
        outputs = []
        pairs = [m for m in self.network.modules() if isinstance(m, SpikingActivation)]
        pairs = pairs if self.fuse_activations else []
        for pair in pairs:
            pair.begin_buffered_runs()
        try:
            size = sub_batch_size(batch, timesteps, x.device, training=self._records_graph(x))
            for part in x.split(size, dim=batch_dim):
                outputs.append(self._run(part, timesteps, part.shape[batch_dim]))
                if self.count_spikes:
                    counts = [c + n.last_spike_count for c, n in zip(counts, neurons, strict=True)]
        finally:
            for pair in pairs:
                pair.end_buffered_runs()
        for neuron, count in zip(neurons, counts, strict=True):
            neuron.last_spike_count = count
        self._last_shape, self._counted = (timesteps, batch), self.count_spikes
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def _records_graph(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` builds an autograd graph (training, e.g. SNN fine-tuning)."""
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def _run(self, x: torch.Tensor, timesteps: int, batch: int) -> torch.Tensor:
        """One pass over ``batch`` images; returns ``[T, batch, ...]``."""
        if x.dim() == len(self.input_shape) + 2:
            x = x.reshape(-1, *x.shape[2:])
        x = to_layout(x)
        for module in self.network.modules():
            if isinstance(module, MultiStepModule):
                module.begin_run(timesteps, batch)
        out = self._forward_network(x)
        if out.shape[0] != timesteps * batch:
            raise RuntimeError(
                f"The network returned {out.shape[0]} samples, expected T*B={timesteps * batch}: "
                "its final Linear must be followed by an OutputIntegrator (use the converter)."
            )
        return out.reshape(timesteps, batch, *out.shape[1:])

    def _forward_network(self, x: torch.Tensor) -> torch.Tensor:
        """``self.network(x)``; a sequential network without hooks runs module by module, each
        :class:`SpikingActivation` directly followed by average pooling fused with it
        (:meth:`SpikingActivation.fire_and_pool`: same output, the unpooled spikes never
        written; CifarNet and VGG pool so)."""
        net = self.network
        if type(net) is not nn.Sequential or net._forward_hooks or net._forward_pre_hooks:
            return net(x)
        modules = list(net)
        i = 0
        while i < len(modules):
            module = modules[i]
            pooled = None
            if isinstance(module, SpikingActivation) and i + 1 < len(modules):
                pooled = module.fire_and_pool(x, modules[i + 1])
            x, i = (module(x), i + 1) if pooled is None else (pooled, i + 2)
        return x

    @property
    def last_run(self) -> tuple[int, int] | None:
        """``(T, B)`` of the last call, ``None`` before the first."""
        return self._last_shape

    def neuron_layers(self) -> dict[str, IFNeuron]:
        """The IF neurons by qualified name (relative to ``network``)."""
        return {n: m for n, m in self.network.named_modules() if isinstance(m, IFNeuron)}

    def layer_names(self) -> dict[nn.Module, str]:
        """Each module's layer as the ANN names it (``layers.0.conv1``, ``layers.0.act1``).

        Conversion wraps an activation as ``Sequential(IFNeuron, Scale)`` and the final linear
        layer as ``Sequential(Linear, OutputIntegrator)``; their members take the wrapped layer's
        name. Reports and NIR node metadata (``layer``) use these names.
        """
        names = {module: name for name, module in self.network.named_modules()}
        for name, module in self.network.named_modules():
            children = list(module.children())
            if not name or not isinstance(module, nn.Sequential) or not children:
                continue
            if isinstance(children[0], IFNeuron) or isinstance(children[-1], OutputIntegrator):
                names |= dict.fromkeys(children, name)
        return names

    def spike_counts(self) -> list[LayerSpikes]:
        """Spikes per IF layer (named by :meth:`layer_names`) during the last call, in network
        order."""
        if self._last_shape is None:
            raise RuntimeError("spike_counts() needs a forward call first.")
        if not self._counted:
            raise RuntimeError(
                "The last call did not count spikes: set count_spikes = True before it (a "
                "SpikeMonitor does)."
            )
        steps, batch = self._last_shape
        layers = self.layer_names()
        return [
            LayerSpikes(
                name=layers[neuron],
                spikes=float(neuron.last_spike_count),
                neurons=neuron.last_neurons_per_sample,
                timesteps=steps,
                samples=batch,
            )
            for name, neuron in self.neuron_layers().items()
        ]
