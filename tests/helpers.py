"""Test-only callbacks, instantiated by Hydra from test overrides."""

from __future__ import annotations

import os

import lightning as L


class ExitAfterEpoch(L.Callback):
    """Kill the process (exit code 17) once ``epoch`` has finished, like a preempted job.

    ModelCheckpoint has saved ``last.ckpt`` at that epoch's validation end, before this hook.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os._exit(17)


class PrintThroughput(L.Callback):
    """Print training images/s between batch 5 and batch 45 (for profiling runs)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import time

        if batch_idx == 5:
            self.start = time.perf_counter()
        if batch_idx == 45:
            print(f"THROUGHPUT {40 * len(batch[0]) / (time.perf_counter() - self.start):.0f} img/s")
