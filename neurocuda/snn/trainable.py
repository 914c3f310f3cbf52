"""Train a converted spiking network's thresholds and initial membranes (SNN fine-tuning).

During fine-tuning every IF neuron holds ``threshold`` and ``v_init`` as parameters and the
``Scale(theta)`` after it multiplies by that same parameter object, so a layer's threshold, reset
and output scale stay one value. Afterwards :func:`runtime_copy` gives the plain runtime model
again (buffers, no gradients) that the NIR exporter and the deployment targets read.
:func:`match_neuron_shapes` lets a saved fine-tuned model load into the structure
:func:`neurocuda.conversion.spiking_structure` rebuilds from the ANN's architecture.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from neurocuda.snn.model import SpikingModel
from neurocuda.snn.neurons import IFNeuron, Scale
from neurocuda.snn.surrogate import Surrogate


def neuron_scale_pairs(snn: SpikingModel) -> dict[str, tuple[IFNeuron, Scale]]:
    """Each IF neuron with the ``Scale(theta)`` after it, by the name of their ``nn.Sequential``."""
    pairs = {
        name: (module[0], module[1])
        for name, module in snn.network.named_modules()
        if isinstance(module, nn.Sequential)
        and len(module) == 2
        and isinstance(module[0], IFNeuron)
        and isinstance(module[1], Scale)
    }
    if len(pairs) != len(snn.neuron_layers()):
        raise ValueError(
            "Every IFNeuron must sit in an nn.Sequential(IFNeuron, Scale) with the Scale by its "
            "threshold, as neurocuda.conversion.convert builds them."
        )
    return pairs


def set_trainable(snn: SpikingModel, enabled: bool) -> None:
    """Thresholds and initial membranes as parameters (each Scale tied to its neuron's threshold
    parameter), or back to plain buffers (each Scale a copy of the threshold)."""
    for name, (neuron, scale) in neuron_scale_pairs(snn).items():
        if enabled and (
            scale.scale.shape != neuron.threshold.shape
            or not bool((scale.scale == neuron.threshold).all())
        ):
            raise ValueError(
                f"{name}: its Scale is not its neuron's threshold; fine-tuning ties the two, so "
                "they must start equal (convert the ANN with neurocuda.conversion.convert)."
            )
        neuron.set_trainable(enabled)
        delattr(scale, "scale")
        if enabled:
            scale.scale = neuron.threshold
        else:
            scale.register_buffer("scale", neuron.threshold.clone())


@torch.no_grad()
def thresholds_per_channel(snn: SpikingModel) -> list[str]:
    """Give every neuron with one threshold for its layer one per channel (that value in each),
    its initial membrane and ``Scale`` the same shape, so that fine-tuning can train them apart.
    The spikes do not change. Returns the names of the layers changed.

    A layer's channels are read from one constant-input step on a blank image (conv features
    ``[C, H, W]`` get ``[C, 1, 1]``, linear ``[C]`` get ``[C]``, as conversion lays out
    per-channel thresholds).
    """
    pairs = neuron_scale_pairs(snn)
    layers = {name: pair for name, pair in pairs.items() if pair[0].threshold.dim() == 0}
    if not layers:
        return []
    shapes: dict[str, torch.Size] = {}
    hooks = [
        snn.network.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: shapes.__setitem__(name, args[0].shape[1:])
        )
        for name in layers
    ]
    device = next(snn.parameters()).device
    try:
        snn(torch.zeros(1, *snn.input_shape, device=device), 1)
    finally:
        for hook in hooks:
            hook.remove()
    trainable = any(neuron.trainable for neuron, _ in pairs.values())
    if trainable:
        set_trainable(snn, False)
    for name, (neuron, scale) in layers.items():
        shape = (shapes[name][0], *([1] * (len(shapes[name]) - 1)))
        neuron.threshold = neuron.threshold.expand(shape).clone()
        neuron.v_init = neuron.v_init.expand(shape).clone()
        neuron.refresh()
        scale.scale = neuron.threshold.clone()
    if trainable:
        set_trainable(snn, True)
    return list(layers)


def set_surrogate(snn: SpikingModel, surrogate: Surrogate) -> None:
    """How backprop through time treats every neuron's spike; inference is the same whatever."""
    for neuron in snn.neuron_layers().values():
        neuron.surrogate = surrogate


def refresh(snn: SpikingModel, min_threshold: float) -> None:
    """After an optimizer step: clamp thresholds to ``>= min_threshold``, recompute fire levels."""
    for neuron in snn.neuron_layers().values():
        neuron.refresh(min_threshold)


def runtime_copy(snn: SpikingModel) -> SpikingModel:
    """A copy of ``snn`` as the runtime holds it: buffers, no gradients, eval mode."""
    plain = copy.deepcopy(snn)
    if any(neuron.trainable for neuron in plain.neuron_layers().values()):
        set_trainable(plain, False)
    return plain.requires_grad_(False).eval()


def match_neuron_shapes(
    snn: SpikingModel, state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> None:
    """Give neurons and Scales whose saved tensors (``prefix + "network." + name``) have another
    shape (placeholders of ``spiking_structure`` vs per-channel values) those saved tensors, so
    that ``load_state_dict`` can load them; trainable neurons stay trainable."""
    pairs = neuron_scale_pairs(snn)
    saved = {
        (name, part, attr): state_dict[key]
        for name in pairs
        for part, attr in (("0", "threshold"), ("0", "v_init"), ("0", "fire_level"), ("1", "scale"))
        if (key := f"{prefix}network.{name}.{part}.{attr}") in state_dict
    }
    if all(
        getattr(pairs[name][int(part)], attr).shape == value.shape
        for (name, part, attr), value in saved.items()
    ):
        return
    trainable = any(neuron.trainable for neuron, _ in pairs.values())
    if trainable:
        set_trainable(snn, False)
    for (name, part, attr), value in saved.items():
        module = pairs[name][int(part)]
        setattr(module, attr, value.detach().to(getattr(module, attr)).clone())
    if trainable:
        set_trainable(snn, True)
