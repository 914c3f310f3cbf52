"""Lightning glue: fine-tune the SNN with an exponential moving average (EMA) of its weights.

Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` validates, checkpoints and
finally keeps the average instead of the last step's weights. What it cannot know: each IF neuron
also holds ``fire_level = threshold - v_init`` (the runtime's comparison level, a buffer), and an
average of that buffer is a few ULPs away from the difference of the averaged threshold and
initial membrane. Wherever averaged weights land (the module during validation and after the fit,
every saved checkpoint) the fire levels are recomputed from them here, so the averaged network is
exactly the IF network that the runtime, its NIR file and loihi2 run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging

from neurocuda.snn import refresh
from neurocuda.training import SNNFinetuneModule

_FIRE_LEVEL = "fire_level"


class SNNWeightAverage(EMAWeightAveraging):
    """EMA of an :class:`~neurocuda.training.SNNFinetuneModule`'s parameters (``decay`` per
    optimizer step), kept a valid IF network."""

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(
                f"finetune.weight_average={decay} must be in (0, 1) (e.g. 0.99, the weight of "
                "the average so far at each step), or null for no averaging."
            )
        super().__init__(decay=decay)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, SNNFinetuneModule):
            raise TypeError(
                f"SNNWeightAverage runs with SNNFinetuneModule, got {type(pl_module).__name__}."
            )
        super().setup(trainer, pl_module, stage)

    @staticmethod
    def _refresh(pl_module: SNNFinetuneModule) -> None:
        refresh(pl_module.snn, pl_module.hparams.min_threshold)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)  # the average swapped in
        self._refresh(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)  # the trained weights back
        self._refresh(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the average copied into the module
        self._refresh(pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)  # state_dict: the average
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.endswith("." + _FIRE_LEVEL)]:
            stem = key[: -len(_FIRE_LEVEL)]
            state[key] = state[stem + "threshold"] - state[stem + "v_init"]  # as refresh does


def snn_weight_average(decay: float | None) -> SNNWeightAverage | None:
    """The callback for ``finetune.weight_average``: None (no callback) when ``decay`` is null."""
    return None if decay is None else SNNWeightAverage(float(decay))
