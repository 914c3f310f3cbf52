"""Spiking runtime: IF neurons, output integrator and the multi-step :class:`SpikingModel`.

The numeric contract (membrane offset, update order, thresholds, resets) is docs/semantics.md.
"""

from neurocuda.snn.encoding import Encoding, encode, poisson_encode
from neurocuda.snn.model import LayerSpikes, SpikingModel
from neurocuda.snn.neurons import (
    IFNeuron,
    MultiStepModule,
    OutputIntegrator,
    ResetMode,
    Scale,
    SpikingActivation,
)
from neurocuda.snn.surrogate import Surrogate, spike
from neurocuda.snn.trainable import (
    match_neuron_shapes,
    neuron_scale_pairs,
    refresh,
    runtime_copy,
    set_surrogate,
    set_trainable,
    thresholds_per_channel,
)

__all__ = [
    "Encoding",
    "IFNeuron",
    "LayerSpikes",
    "MultiStepModule",
    "OutputIntegrator",
    "ResetMode",
    "Scale",
    "SpikingActivation",
    "SpikingModel",
    "Surrogate",
    "encode",
    "match_neuron_shapes",
    "neuron_scale_pairs",
    "poisson_encode",
    "refresh",
    "runtime_copy",
    "set_surrogate",
    "set_trainable",
    "spike",
    "thresholds_per_channel",
]
