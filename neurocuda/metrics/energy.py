"""Energy estimates from operation counts and published per-operation energies.

Figures (all per operation):

* Loihi synaptic operation 23.6 pJ and active neuron update 52 pJ: Davies et al., "Loihi: A
  Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1), 2018, Table 2 (measured
  on Loihi 1, 14 nm). Intel publishes no per-operation energies for Loihi 2; its brief claims better
  efficiency, so these figures are an upper-bound estimate for Loihi 2.
* 32-bit float multiply-accumulate 4.6 pJ (3.7 pJ multiply + 0.9 pJ add), 32-bit float add
  (accumulate) 0.9 pJ, 8-bit integer MAC 0.23 pJ (0.2 + 0.03): Horowitz, "Computing's energy
  problem (and what we can do about it)", ISSCC 2014, 45 nm. The usual ANN-vs-SNN comparison
  charges the ANN ``MACs * E_MAC`` and the SNN ``synops * E_AC``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOIHI_SYNOP_PJ = 23.6
LOIHI_NEURON_UPDATE_PJ = 52.0
FP32_MAC_PJ = 4.6
FP32_AC_PJ = 0.9
INT8_MAC_PJ = 0.23


@dataclass
class LayerEnergy:
    """Per-image operation counts and energies (picojoules) of one layer."""

    name: str
    synops: float
    neuron_updates: float
    ann_macs: int
    loihi_pj: float
    snn_ac_pj: float
    ann_fp32_pj: float


@dataclass
class EnergyEstimate:
    """Per-image totals plus per-layer rows; ``ratio`` is ANN fp32 energy over Loihi energy."""

    layers: list[LayerEnergy]
    synops: float
    neuron_updates: float
    ann_macs: int
    loihi_uj: float
    snn_ac_uj: float
    ann_fp32_uj: float
    ann_int8_uj: float

    @property
    def ratio(self) -> float:
        return self.ann_fp32_uj / self.loihi_uj if self.loihi_uj else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "ann_fp32_over_loihi": self.ratio, "sources": SOURCES}


SOURCES = {
    "loihi_synop_pj": "Davies et al., IEEE Micro 38(1), 2018, Table 2 (Loihi 1)",
    "loihi_neuron_update_pj": "Davies et al., IEEE Micro 38(1), 2018, Table 2 (Loihi 1)",
    "fp32_mac_pj": "Horowitz, ISSCC 2014 (45 nm): 3.7 pJ mult + 0.9 pJ add",
    "int8_mac_pj": "Horowitz, ISSCC 2014 (45 nm): 0.2 pJ mult + 0.03 pJ add",
}


def estimate_energy(
    synops: dict[str, float],
    neuron_updates: dict[str, float],
    ann_macs: dict[str, int],
) -> EnergyEstimate:
    """Combine per-image counts keyed by layer (synops and ANN MACs both keyed by the layer whose
    output their connections read). The graph input's row holds the first layer's ANN MACs but
    no synops: the deployments do not count the graded input's deliveries into the first layer
    (on chip, each nonzero payload over each of its synapses at every step), so the SNN totals
    leave that layer out and the ANN totals do not."""
    names = list(dict.fromkeys([*neuron_updates, *synops, *ann_macs]))
    layers = []
    for name in names:
        ops, updates, macs = (
            synops.get(name, 0.0),
            neuron_updates.get(name, 0.0),
            ann_macs.get(name, 0),
        )
        layers.append(
            LayerEnergy(
                name=name,
                synops=ops,
                neuron_updates=updates,
                ann_macs=macs,
                loihi_pj=ops * LOIHI_SYNOP_PJ + updates * LOIHI_NEURON_UPDATE_PJ,
                snn_ac_pj=ops * FP32_AC_PJ,
                ann_fp32_pj=macs * FP32_MAC_PJ,
            )
        )
    total_macs = sum(ann_macs.values())
    return EnergyEstimate(
        layers=layers,
        synops=sum(row.synops for row in layers),
        neuron_updates=sum(row.neuron_updates for row in layers),
        ann_macs=total_macs,
        loihi_uj=sum(row.loihi_pj for row in layers) * 1e-6,
        snn_ac_uj=sum(row.snn_ac_pj for row in layers) * 1e-6,
        ann_fp32_uj=total_macs * FP32_MAC_PJ * 1e-6,
        ann_int8_uj=total_macs * INT8_MAC_PJ * 1e-6,
    )
