"""ModelCheckpoint whose deleted checkpoints take their ``.nir`` files with them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointWithNIR(ModelCheckpoint):
    """A ``ModelCheckpoint`` that also deletes ``<checkpoint>.nir`` when it deletes a checkpoint
    (``save_top_k`` replacing a worse one), so no orphaned NIR file is left behind, and names the
    files it wrote at a step (:meth:`written_at`): with ``save_top_k`` > 1 its
    ``best_model_path`` is the best file kept, often an older one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._written: tuple[int, list[str]] = (-1, [])

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        step, files = self._written
        self._written = (trainer.global_step, [*files, filepath] if step == trainer.global_step
                         else [filepath])  # fmt: skip

    def written_at(self, step: int) -> list[str]:
        """The files this callback wrote at global step ``step`` in this process (none before a
        restore)."""
        return list(self._written[1]) if self._written[0] == step else []

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Lightning's one hook for deletions (ModelCheckpoint calls it for every file it drops)
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            Path(filepath).with_suffix(".nir").unlink(missing_ok=True)
