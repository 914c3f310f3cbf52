"""How many Loihi 2 neuro-cores and chips a compiled network needs, per layer.

Published limits (Intel Labs, "Taking Neuromorphic Computing to the Next Level with Loihi 2",
technology brief, 2021, Table 1): 128 neuro-cores per chip, up to 8,192 neurons per core (1 M per
chip), 120 M synapses per chip, 192 KB of memory per neuro-core shared by neuron state, synapses and
routing. Not published for Loihi 2, assumed from Loihi 1 (Davies et al., IEEE Micro 38(1), 2018):
4,096 input axons (fan-in sources) per core.

Model (an estimate, stated so it can be checked): a neuron's state takes 6 bytes (24-bit ``u`` and
``v``); a dense synapse one byte (8-bit weight); a conv layer stores its kernel once per core
(Loihi 2's shared-weight convolutional connectivity) for the output channels the core holds. A layer
is split over the fewest cores that satisfy the neuron, memory and fan-in limits; layers do not
share cores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from neurocuda.deploy.network import FloatNetwork

CORES_PER_CHIP = 128
NEURONS_PER_CORE = 8192
MEMORY_PER_CORE_BYTES = 192 * 1024
AXONS_PER_CORE = 4096  # Loihi 1 figure (Davies et al. 2018); assumed for Loihi 2
STATE_BYTES_PER_NEURON = 6
WEIGHT_BYTES = 1


@dataclass
class LayerResources:
    """One population's footprint and cores (``limited_by`` names the binding limit)."""

    name: str
    neurons: int
    synapses: int
    fan_in: int
    weight_bytes: int
    cores: int
    limited_by: str
    fan_in_exceeds_axons: bool


@dataclass
class ResourceMap:
    """Per-layer rows and totals for a network."""

    layers: list[LayerResources]
    cores: int
    chips: int
    neurons: int
    synapses: int

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "limits": {
                "cores_per_chip": CORES_PER_CHIP,
                "neurons_per_core": NEURONS_PER_CORE,
                "memory_per_core_bytes": MEMORY_PER_CORE_BYTES,
                "axons_per_core": AXONS_PER_CORE,
            },
        }


def _layer(network: FloatNetwork, pop) -> LayerResources:
    neurons = math.prod(pop.shape)
    incoming = network.incoming(pop.name)
    fan_in = synapses = 0
    kernel_bytes = dense_bytes = 0
    out_channels = pop.shape[0] if len(pop.shape) == 3 else neurons
    for p in incoming:
        per_neuron = math.prod(p.weight.shape[1:])
        fan_in += per_neuron
        synapses += neurons * per_neuron
        if p.kind == "conv":
            kernel_bytes += p.weight.numel() * WEIGHT_BYTES
        else:
            dense_bytes += p.weight.numel() * WEIGHT_BYTES
    by_neurons = math.ceil(neurons / NEURONS_PER_CORE)
    # dense synapses are split with the neurons; each core holds the kernels of its channels
    state_bytes = neurons * STATE_BYTES_PER_NEURON
    by_memory = math.ceil((state_bytes + dense_bytes) / MEMORY_PER_CORE_BYTES)
    if kernel_bytes:
        per_channel = kernel_bytes / out_channels
        budget = MEMORY_PER_CORE_BYTES - STATE_BYTES_PER_NEURON * min(neurons, NEURONS_PER_CORE)
        channels_per_core = max(
            1, int(budget // (per_channel + STATE_BYTES_PER_NEURON * neurons / out_channels))
        )
        by_memory = max(by_memory, math.ceil(out_channels / channels_per_core))
    options = {"neurons": by_neurons, "memory": by_memory}
    limited_by = max(options, key=options.get)
    return LayerResources(
        name=pop.label or pop.name,
        neurons=neurons,
        synapses=synapses,
        fan_in=fan_in,
        weight_bytes=kernel_bytes + dense_bytes,
        cores=max(1, options[limited_by]),
        limited_by=limited_by,
        fan_in_exceeds_axons=fan_in > AXONS_PER_CORE,
    )


def map_resources(network: FloatNetwork) -> ResourceMap:
    """Estimate cores and chips for ``network`` (see the module docstring for the model)."""
    layers = [_layer(network, pop) for pop in network.populations]
    cores = sum(row.cores for row in layers)
    return ResourceMap(
        layers=layers,
        cores=cores,
        chips=math.ceil(cores / CORES_PER_CHIP),
        neurons=sum(row.neurons for row in layers),
        synapses=sum(row.synapses for row in layers),
    )
