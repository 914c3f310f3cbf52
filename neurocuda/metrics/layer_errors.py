"""Where a spiking model loses accuracy at T steps: each IF layer against its ideal rate.

Given the time-averaged input ``x`` it received over a run of T steps, an IF neuron with reset by
subtraction, threshold ``theta`` and initial membrane ``v_init`` would ideally emit

    n* = clamp(ceil((v_init + T x) / theta) - 1, 0, T)      # strict '>' (docs/semantics.md)

spikes: what it emits for a constant input, the quantised clip of QCFS with L = T levels. It emits
a different count ``n`` when its input varies in time (a late negative input cannot take back an
early spike; a late burst cannot fire more than once per step): the *unevenness* error that the
conversion literature (QCFS, SRP, SlipReLU) blames for most of the loss at low T.

:func:`layer_errors` measures it per layer, and runs the *rate reference* beside the SNN: the same
network with every IF layer replaced by that ideal function of its (time-constant) input, i.e. an
ANN quantised to T levels. Its accuracy is what the SNN would reach without unevenness error; the
distance of each layer's output from the reference's shows where the error builds up. Written by
hand: no SNN library reports this split (spikingjelly and snntorch give rates only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from neurocuda.batches import capped, image_count
from neurocuda.progress import progress as show_progress
from neurocuda.snn import IFNeuron, SpikingActivation, SpikingModel
from neurocuda.snn.layout import to_layout


@dataclass(frozen=True)
class LayerError:
    """One IF layer's error at T steps, over every image seen (neuron-weighted means)."""

    name: str
    rate: float
    """Spikes per neuron per step in the SNN."""
    off_fraction: float
    """Share of neurons whose spike count differs from the ideal count for their mean input."""
    excess_spikes: float
    """Mean of (count - ideal count) per neuron: > 0 fires too much, < 0 too little."""
    local_error: float
    """Mean |count - ideal| * theta / T over the mean |ideal output| (this layer's own error)."""
    drift: float
    """Relative L2 distance of the layer's time-averaged output from the rate reference's
    (the error accumulated up to and including this layer)."""


@dataclass(frozen=True)
class LayerErrorReport:
    """:func:`layer_errors`' result."""

    timesteps: int
    images: int
    snn_accuracy: float
    reference_accuracy: float
    """The rate reference's (an ANN quantised to T levels; see the module docstring)."""
    layers: list[LayerError]


@dataclass
class _Sums:
    neurons: int = 0
    spikes: float = 0.0
    off: float = 0.0
    excess: float = 0.0
    abs_error: float = 0.0
    ideal_abs: float = 0.0
    drift_sq: float = 0.0
    reference_sq: float = 0.0


@dataclass
class _Probe:
    """Forward hooks on every SpikingActivation: record (SNN pass) or replace (reference pass)."""

    replace: bool = False
    outputs: dict[str, deque[torch.Tensor]] = field(default_factory=dict)
    """Each layer's SNN outputs, one per pass (a call runs the batch in several passes on CPU)."""
    sums: dict[str, _Sums] = field(default_factory=dict)

    def hook(self, name: str) -> Callable[..., torch.Tensor | None]:
        def run(pair: SpikingActivation, inputs: tuple[torch.Tensor], output: torch.Tensor):
            neuron: IFNeuron = pair[0]
            steps = neuron.as_sequence(inputs[0]).float()
            t = steps.shape[0]
            theta, v_init = neuron.threshold.float(), neuron.v_init.float()
            ideal = (torch.ceil((v_init + steps.sum(0)) / theta) - 1).clamp_(0, t)
            if self.replace:  # every later layer sees the ideal rate, constant in time
                steady = (ideal * theta / t).unsqueeze(0).expand(t, *ideal.shape)
                self._compare(name, steady[0])
                return to_layout(steady.reshape(output.shape))
            # the pair's output is spikes * theta: back to integer counts per neuron
            count = (output.reshape(steps.shape).float().sum(0) / pair[1].scale.float()).round_()
            self._record(name, count, ideal, theta, t)
            return None

        return run

    def _record(
        self, name: str, count: torch.Tensor, ideal: torch.Tensor, theta: torch.Tensor, t: int
    ) -> None:
        unit = theta / t
        self.outputs.setdefault(name, deque()).append(count * unit)
        s = self.sums.setdefault(name, _Sums())
        diff = count - ideal
        s.neurons += diff.numel()
        s.spikes += float(count.sum()) / t
        s.off += float((diff != 0).sum())
        s.excess += float(diff.sum())
        s.abs_error += float((diff.abs() * unit).sum())
        s.ideal_abs += float((ideal * unit).abs().sum())

    def _compare(self, name: str, reference: torch.Tensor) -> None:
        s = self.sums[name]
        s.drift_sq += float((self.outputs[name].popleft() - reference).square().sum())
        s.reference_sq += float(reference.square().sum())


@torch.inference_mode()
def layer_errors(
    snn: SpikingModel,
    dataloader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    timesteps: int,
    max_images: int | None = None,
    progress: bool = True,
) -> LayerErrorReport:
    """Run ``snn`` (direct encoding) and its rate reference at ``timesteps`` on ``dataloader``'s
    images (at most ``max_images``); return the per-layer errors and both accuracies."""
    if any(n.reset != "subtract" for n in snn.neuron_layers().values()):
        raise ValueError(
            "layer_errors measures IF neurons with reset by subtraction; this SNN resets to zero "
            "(conversion.reset=zero), whose ideal count is not a function of the mean input."
        )
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}.")
    names = snn.layer_names()
    pairs = {names[m]: m for m in snn.network.modules() if isinstance(m, SpikingActivation)}
    probe = _Probe()
    handles = [pair.register_forward_hook(probe.hook(name)) for name, pair in pairs.items()]
    device = next(snn.buffers()).device
    correct = reference_correct = seen = 0
    try:
        total = image_count(dataloader, max_images)
        with show_progress(f"layer errors T={timesteps}", total, enabled=progress) as advance:
            for x, y in capped(dataloader, max_images):
                x, y = x.to(device), y.to(device)
                probe.replace = False
                correct += int((snn(x, timesteps)[-1].argmax(-1) == y).sum())
                probe.replace = True
                reference_correct += int((snn(x, timesteps)[-1].argmax(-1) == y).sum())
                seen += len(y)
                status = f"SNN {correct / seen:.2%} reference {reference_correct / seen:.2%}"
                advance(len(y), status=status)
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("layer_errors got no images: the data loader is empty.")
    return LayerErrorReport(
        timesteps=timesteps,
        images=seen,
        snn_accuracy=correct / seen,
        reference_accuracy=reference_correct / seen,
        layers=[_layer(name, probe.sums[name]) for name in pairs],
    )


def _layer(name: str, s: _Sums) -> LayerError:
    return LayerError(
        name=name,
        rate=s.spikes / s.neurons,
        off_fraction=s.off / s.neurons,
        excess_spikes=s.excess / s.neurons,
        local_error=s.abs_error / max(s.ideal_abs, 1e-12),
        drift=(s.drift_sq / max(s.reference_sq, 1e-12)) ** 0.5,
    )
