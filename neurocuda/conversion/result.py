"""The outcome of converting one checkpoint, shared by the conversion and NIR callbacks."""

from __future__ import annotations

from dataclasses import dataclass

from neurocuda.conversion.evaluate import SNNEvaluation
from neurocuda.snn import SpikingModel


@dataclass
class ConversionResult:
    """A converted model with its accuracy per T (SNN) and the ANN's on the same images."""

    snn: SpikingModel
    checkpoint_paths: list[str]  # the checkpoint files written for these weights (may be none)
    epoch: int
    accuracy: dict[int, float]
    ann_accuracy: float
    evaluation: SNNEvaluation | None = None
