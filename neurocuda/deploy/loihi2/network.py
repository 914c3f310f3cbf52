"""Integer network description shared by the simulator, the quantizer and the Lava reference.

A network is a set of neuron populations (Loihi neuron processes) fed by projections (Lava
``Dense``/``Conv`` synapse processes) from other populations or from graded input ports. All values
are integers in Loihi's units; nothing here is float. The same description is serialized to JSON so
that ``scripts/lava_reference.py`` can build identical Lava processes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from neurocuda.snn.neurons import ResetMode

ProjectionKind = Literal["dense", "conv"]


@dataclass
class Population:
    """A population of Loihi neurons with the state layout ``shape`` (``[C, H, W]`` or ``[N]``).

    ``vth``: threshold; compared as ``v > vth << vth_shift`` (Lava: 17-bit ``vth``, shift 6; our
    loihi2 mode: a full 24-bit threshold, shift 0). ``act_shift``: synaptic input alignment (Lava:
    ``a_in << 6``; loihi2 mode: 0, its projections already shift by ``6 + weight_exp``).
    ``reset``: ``zero`` (every Lava LIF) or
    ``subtract`` (``v -= reset_amount``, a Loihi 2 programmable-neuron feature). ``spiking=False``
    makes an integrating readout that never fires. ``bias_mant``/``bias_exp``/``v_init`` are per
    neuron tensors of ``shape``.
    """

    name: str
    shape: tuple[int, ...]
    vth: torch.Tensor
    bias_mant: torch.Tensor
    bias_exp: torch.Tensor
    v_init: torch.Tensor
    du: int = 4095
    dv: int = 0
    vth_shift: int = 6
    act_shift: int = 6
    reset: ResetMode = "zero"
    reset_amount: torch.Tensor | None = None
    spiking: bool = True


@dataclass
class Projection:
    """Synapses from ``source`` (a population or an input port) to ``target``.

    ``weight``: int mantissas, ``[N_out, N_in]`` (dense, over C-order flattened source/target) or
    ``[C_out, C_in, kH, kW]`` (conv, cross-correlation like torch). Lava ``Dense`` applies
    ``a = (W s) << weight_exp`` (right shift for negative exponents) after clipping ``W`` to 8 bits
    by sign mode and truncating to ``num_weight_bits``; Lava ``Conv`` ignores ``weight_exp`` and
    wraps its output to 24 bits. ``graded``: the source sends integer payloads, not binary spikes.
    """

    source: str
    target: str
    kind: ProjectionKind
    weight: torch.Tensor
    weight_exp: int = 0
    num_weight_bits: int = 8
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    graded: bool = False


@dataclass
class IntNetwork:
    """Populations in topological order, the projections between them and the input ports."""

    inputs: dict[str, tuple[int, ...]]
    populations: list[Population]
    projections: list[Projection]
    output: str
    metadata: dict[str, object] = field(default_factory=dict)

    def population(self, name: str) -> Population:
        """Return the population called ``name``."""
        for pop in self.populations:
            if pop.name == name:
                return pop
        raise KeyError(f"No population {name!r}; have {[p.name for p in self.populations]}.")

    def incoming(self, name: str) -> list[Projection]:
        """Projections into ``name``, in declaration order (the order inputs are summed)."""
        return [p for p in self.projections if p.target == name]

    def depth(self) -> int:
        """Number of projections on the longest input-to-output path (Lava's pipeline delay)."""
        level = dict.fromkeys(self.inputs, 0)
        for pop in self.populations:
            level[pop.name] = 1 + max(level[p.source] for p in self.incoming(pop.name))
        return level[self.output]


def _tensor_dict(obj: object) -> dict:
    raw = asdict(obj)  # type: ignore[call-overload]
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()}


def to_json(network: IntNetwork) -> str:
    """Serialize ``network`` (tensors as nested lists)."""
    return json.dumps(
        {
            "inputs": {k: list(v) for k, v in network.inputs.items()},
            "populations": [_tensor_dict(p) for p in network.populations],
            "projections": [_tensor_dict(p) for p in network.projections],
            "output": network.output,
        }
    )
