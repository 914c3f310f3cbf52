"""Spike rates per IF layer and synaptic operations per image of a :class:`SpikingModel`.

A synaptic operation (synop) is one input event delivered over one synapse: for every Conv2d,
Linear and AvgPool2d after the first IF layer, each nonzero input element counts its exact fan-out
(how many outputs it reaches, borders and strides included). Layers before the first IF layer see
the analog input (direct encoding); their operations are multiply-accumulates and are counted
separately as ``input_ops`` (every input element times its fan-out, as executed: once per image
for a constant input, once per step for an encoded sequence).

This counts the network as the runtime computes it (``snn/synops_per_image``): an AvgPool2d's
nonzero outputs each count the next layer's fan-out once, however many spikes they average. A
deployment (:mod:`neurocuda.deploy`, ``deploy/<target>/synops_per_image``) folds the pooling into
the next layer and counts every spike over every synapse of the folded layer, as neuromorphic
hardware delivers it: where pooling merges spikes, its count is the larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from neurocuda.metrics.fanout import fan_out
from neurocuda.snn import IFNeuron, SpikingActivation, SpikingModel

_COUNTED = (nn.Conv2d, nn.Linear, nn.AvgPool2d)


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _rows(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` as ``[N, features]`` in memory order (a view of a dense tensor in either layout)."""
    return (x.permute(0, 2, 3, 1) if channels_last else x).reshape(x.shape[0], -1)


@dataclass
class SpikeStats:
    """Totals over every image seen by a :class:`SpikeMonitor`."""

    spike_rates: dict[str, float]
    """IF layer name -> mean spikes per neuron per time step."""
    synops_per_image: float
    input_ops_per_image: float
    images: int


@dataclass
class SpikeMonitor:
    """Context manager that records spikes and synaptic operations while ``snn`` runs."""

    snn: SpikingModel
    _spikes: dict[str, float] = field(default_factory=dict)
    _neuron_steps: dict[str, int] = field(default_factory=dict)
    _synops: float = 0.0
    _input_ops: float = 0.0
    _images: int = 0
    _after_neuron: bool = False
    _fan_outs: dict[tuple[int, tuple[int, ...], bool], torch.Tensor] = field(default_factory=dict)
    _hooks: list = field(default_factory=list)
    _was_counting: bool = False

    def __enter__(self) -> SpikeMonitor:
        self._was_counting, self.snn.count_spikes = self.snn.count_spikes, True
        # per pass: SpikingModel may run a batch in several passes (neurocuda.snn.chunking)
        self._hooks.append(self.snn.network.register_forward_pre_hook(self._start))
        self._hooks.append(self.snn.register_forward_hook(self._finish))
        # a fused pair's transient hook, not its neuron's: other hooks turn the fusion off
        paired = {id(m[0]) for m in self.snn.network.modules() if isinstance(m, SpikingActivation)}
        for module in self.snn.network.modules():
            if isinstance(module, SpikingActivation):
                self._hooks.append(module.register_transient_hook(self._neuron_ran))
            elif isinstance(module, IFNeuron) and id(module) not in paired:
                self._hooks.append(module.register_forward_hook(self._neuron_ran))
            elif isinstance(module, _COUNTED):
                self._hooks.append(module.register_forward_hook(self._count))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.snn.count_spikes = self._was_counting

    def _start(self, *_: object) -> None:
        self._after_neuron = False

    def _neuron_ran(self, *_: object) -> None:
        self._after_neuron = True

    def _count(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        x = inputs[0].detach()
        channels_last = _is_channels_last(x)
        key = (id(module), tuple(x.shape[1:]), channels_last)
        if key not in self._fan_outs:
            fan = fan_out(module, key[1]).to(x.device)
            self._fan_outs[key] = _rows(fan.unsqueeze(0), channels_last)[0].double()
        fan = self._fan_outs[key]
        if self._after_neuron:
            # per input element, in memory order (3x faster than reducing the 4-D tensor on CPU):
            # how many samples it is nonzero in (exact in float32 up to 2**24 samples), times its
            # fan-out, summed in float64 (exact integers)
            active = (_rows(x, channels_last) != 0).sum(0, dtype=torch.float32)
            self._synops += float(active.double().dot(fan))
        else:
            self._input_ops += float(fan.sum()) * x.shape[0]

    def _finish(self, *_: object) -> None:
        for layer in self.snn.spike_counts():
            self._spikes[layer.name] = self._spikes.get(layer.name, 0.0) + layer.spikes
            steps = layer.neurons * layer.timesteps * layer.samples
            self._neuron_steps[layer.name] = self._neuron_steps.get(layer.name, 0) + steps
        self._images += self.snn.last_run[1] if self.snn.last_run else 0

    def stats(self) -> SpikeStats:
        """Rates and per-image operation counts so far."""
        images = max(1, self._images)
        return SpikeStats(
            spike_rates={n: s / max(1, self._neuron_steps[n]) for n, s in self._spikes.items()},
            synops_per_image=self._synops / images,
            input_ops_per_image=self._input_ops / images,
            images=self._images,
        )
