"""The outcome of converting one checkpoint, handed from the conversion callback to the NIR and
deployment callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neurocuda.conversion.evaluate import SNNEvaluation
from neurocuda.conversion.settings import ConversionConfig
from neurocuda.snn import SpikingModel


@dataclass
class ConversionResult:
    """A converted model with its accuracy per T (SNN) and the ANN's on the same images."""

    snn: SpikingModel
    settings: ConversionConfig
    checkpoint_paths: list[str]  # the checkpoint files written for these weights (may be none)
    epoch: int
    accuracy: dict[int, float]
    ann_accuracy: float
    evaluation: SNNEvaluation | None = None
    nir_paths: list[Path] = field(default_factory=list)
    """The verified ``.nir`` files of this SNN (set by the NIR round-trip callback)."""
