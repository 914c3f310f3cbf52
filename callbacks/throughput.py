"""Lightning glue: training throughput per epoch and the fit's wall time, for benchmarks.

    python train.py +callbacks.throughput._target_=callbacks.throughput.TrainingThroughput

Logs ``perf/train_images_per_s`` at the end of every training epoch (its batches after the first
``skip_batches``, timed from the start of the first one counted to the end of the last one, the
GPU synchronised at both ends; validation excluded) and ``perf/fit_minutes`` (from the start of
training to its end: every epoch with validation, checkpoints, conversion and NIR export).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from neurocuda.batches import batch_images
from neurocuda.devices import synchronize


class TrainingThroughput(L.Callback):
    """Images per second of the training steps, and minutes of the whole fit."""

    def __init__(self, skip_batches: int = 1) -> None:
        if skip_batches < 0:
            raise ValueError(f"skip_batches={skip_batches} must be >= 0.")
        self.skip_batches = skip_batches
        self._fit_start = 0.0
        self._epoch_start: float | None = None
        self._seconds = 0.0
        self._images = 0

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._seconds, self._images = None, 0.0, 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.skip_batches:
            synchronize(pl_module.device)
            self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._epoch_start is None:
            return
        self._images += batch_images(batch)
        if batch_idx + 1 == trainer.num_training_batches:
            synchronize(pl_module.device)
            self._seconds = time.perf_counter() - self._epoch_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._seconds > 0:
            self._log(trainer, {"perf/train_images_per_s": self._images / self._seconds})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self._log(trainer, {"perf/fit_minutes": (time.perf_counter() - self._fit_start) / 60})
