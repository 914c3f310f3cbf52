"""ModelCheckpoint whose deleted checkpoints take their ``.nir`` files with them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointWithNIR(ModelCheckpoint):
    """A ``ModelCheckpoint`` that also deletes ``<checkpoint>.nir`` when it deletes a checkpoint
    (``save_top_k`` replacing a worse one), so no orphaned NIR file is left behind."""

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Lightning's one hook for deletions (ModelCheckpoint calls it for every file it drops)
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            Path(filepath).with_suffix(".nir").unlink(missing_ok=True)
