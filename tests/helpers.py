"""Test-only callbacks, instantiated by Hydra from test overrides."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class ExitAfterEpoch(L.Callback):
    """Kill the process (exit code 17) once ``epoch`` has finished, like a preempted job.

    ModelCheckpoint has saved ``last.ckpt`` at that epoch's validation end, before this hook. A
    resumed run (which re-creates this callback from the saved config) is not stopped.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and trainer.ckpt_path is None:
            os._exit(17)


class PrintThroughput(L.Callback):
    """Print training images/s between batch 5 and batch 45 (for profiling runs)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import time

        if batch_idx == 5:
            self.start = time.perf_counter()
        if batch_idx == 45:
            print(f"THROUGHPUT {40 * len(batch[0]) / (time.perf_counter() - self.start):.0f} img/s")


class KillOnce(L.Callback):
    """SIGKILL this process at each of ``at`` once, like a preempted job; ``marker`` (a file) lists
    the points already killed at, so a resumed run, which re-creates this callback from the saved
    config, passes them.

    Points: ``step:N`` (before the training batch at global step N, mid-epoch), ``save:E:K``
    (while the K-th checkpoint of epoch E in this process is being dumped, before it is written:
    ``save:E:2`` falls between the best checkpoint and ``last.ckpt``) and ``epoch_end:E`` (in epoch
    E's ``on_train_epoch_end``: after its checkpoints, before the conversion callbacks, which are
    listed after this one).
    """

    def __init__(self, at: list[str], marker: str) -> None:
        self.at = list(at)
        self.marker = Path(marker)
        self.saves: dict[int, int] = {}

    def _kill_at(self, point: str) -> None:
        done = self.marker.read_text().split() if self.marker.is_file() else []
        if point in self.at and point not in done:
            with self.marker.open("a") as file:
                file.write(point + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer: L.Trainer, *_: object) -> None:
        self._kill_at(f"step:{trainer.global_step}")

    def on_save_checkpoint(self, trainer: L.Trainer, *_: object) -> None:
        epoch = trainer.current_epoch
        self.saves[epoch] = self.saves.get(epoch, 0) + 1
        self._kill_at(f"save:{epoch}:{self.saves[epoch]}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._kill_at(f"epoch_end:{trainer.current_epoch}")
