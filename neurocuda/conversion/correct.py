"""Stage 6: per-channel initial-membrane correction, layer by layer (``conversion.correction``).

At low T an IF layer fires too often: its membranes start at theta/2, so a neuron whose inputs are
positive early and negative later spikes before the negative part arrives and cannot take the spike
back (Bu et al.'s "unevenness error"). Measured on a trained CifarNet the error is one-sided: the
second layer's mean output is 27% above the ANN's at T=8 (docs/results.md). Following Li et al.
(ICML 2021, "potential initialization" / bias correction), each layer in turn is run at ``T_c``
steps on calibration images and, per channel, its mean output (spike rate x theta) is compared with
the ANN activation's mean on the same images; the difference ``e`` is removed from the initial
membrane as ``v_init -= e * T_c`` (one spike moves ``theta`` of charge, so ``e * T_c`` is the
surplus charge). A shifted initial membrane changes the spike *count* by the same amount at every T,
so its effect on the rate fades as 1/T, like the error it corrects (a bias shift would not fade).
Layers are corrected in order, each measured with the earlier ones already corrected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neurocuda.snn import IFNeuron, SpikingModel


def channel_means(output: torch.Tensor) -> torch.Tensor:
    """Mean of ``[N, C, ...]`` over everything but the channel dimension: ``[C]``."""
    return output.transpose(0, 1).reshape(output.shape[1], -1).mean(dim=1)


@torch.no_grad()
def activation_channel_means(
    ann: nn.Module, names: Sequence[str], images: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-channel mean output of the ANN activations ``names`` on ``images``."""
    means: dict[str, torch.Tensor] = {}
    hooks = [
        ann.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: means.__setitem__(name, channel_means(out.float()))
        )
        for name in names
    ]
    try:
        ann(images)
    finally:
        for hook in hooks:
            hook.remove()
    return means


@torch.no_grad()
def correct_initial_membranes(
    snn: SpikingModel,
    neurons: dict[str, str],
    targets: dict[str, torch.Tensor],
    images: torch.Tensor,
    timesteps: int,
) -> dict[str, float]:
    """Shift each neuron layer's ``v_init`` so its mean output at ``timesteps`` matches ``targets``.

    ``neurons`` maps ANN activation names (the keys of ``targets``, in network order) to the
    neuron's name in ``snn.network``. Returns each layer's mean absolute per-channel error before
    its correction.
    """
    errors = {}
    for activation, neuron_name in neurons.items():
        neuron: IFNeuron = snn.network.get_submodule(neuron_name)
        spikes = _spikes_of(snn, neuron, images, timesteps)
        theta = neuron.threshold.reshape(-1)  # [] -> [1] or per channel [C]
        error = channel_means(spikes) * theta - targets[activation].to(theta.device)
        per_channel = (-1, *([1] * (spikes.dim() - 2)))  # [C, 1, 1] or [C]
        neuron.shift_initial_membrane(-(error * timesteps).reshape(per_channel))
        errors[activation] = float(error.abs().mean())
    return errors


def _spikes_of(
    snn: SpikingModel, neuron: IFNeuron, images: torch.Tensor, timesteps: int
) -> torch.Tensor:
    """The spikes ``[T*B, ...]`` ``neuron`` emits when ``snn`` runs ``images`` (pass by pass)."""
    captured: list[torch.Tensor] = []
    hook = neuron.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        snn(images, timesteps)
    finally:
        hook.remove()
    return torch.cat(captured)
