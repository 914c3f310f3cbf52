"""Lightning glue: keep the CSV metrics file in step with the checkpoints, so a resumed run ends
with the same file as an uninterrupted one."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from neurocuda.training.csv_logger import ResumableCSVLogger


class CSVResume(L.Callback):
    """At every checkpoint save, write each :class:`ResumableCSVLogger`'s recorded metrics and
    store its row count in the checkpoint; when fit restores a checkpoint, cut each file back to
    that count (rows the killed run logged after the checkpoint are logged again). Testing from a
    checkpoint leaves the file alone."""

    KEY = "csv_metrics_rows"

    @staticmethod
    def _loggers(trainer: L.Trainer) -> list[ResumableCSVLogger]:
        if not trainer.is_global_zero:
            return []
        return [lg for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)]

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[self.KEY] = [lg.experiment.rows_written() for lg in self._loggers(trainer)]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # test/validate load weights, not the run
            return
        rows = checkpoint.get(self.KEY, [])  # none in a checkpoint from before this callback
        for i, logger in enumerate(self._loggers(trainer)):
            logger.experiment.keep_rows(rows[i] if i < len(rows) else None)
