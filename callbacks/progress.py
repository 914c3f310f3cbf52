"""Lightning progress bars: rich on a terminal, periodic text lines in a log file."""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from neurocuda.batches import batch_images
from neurocuda.progress import EVERY_PERCENT, LineProgress, duration


def progress_bar(every_percent: float = EVERY_PERCENT) -> ProgressBar:
    """Lightning's :class:`RichProgressBar` when stdout is a terminal, else a
    :class:`TextProgressBar` (a redrawn bar shows nothing in a log file until the epoch ends)."""
    return RichProgressBar() if sys.stdout.isatty() else TextProgressBar(every_percent)


class TextProgressBar(ProgressBar):
    """A line every ``every_percent`` of a training epoch (batches, batches/s, images/s, ETA) and
    one per validation and test run with its metrics; nothing is redrawn."""

    def __init__(self, every_percent: float = EVERY_PERCENT) -> None:
        super().__init__()
        self.every_percent = every_percent
        self._enabled = True
        self._lines: LineProgress | None = None
        self._images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self.total_train_batches
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self._lines = LineProgress(
            f"Epoch {trainer.current_epoch + 1}{epochs}",
            int(total) if math.isfinite(total) else None,
            unit="batches",
            every_percent=self.every_percent,
        )
        self._images = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._enabled or self._lines is None:
            return
        self._images += batch_images(batch)
        elapsed = max(self._lines.elapsed, 1e-9)
        loss = self.get_metrics(trainer, pl_module).get("train/loss_step")
        status = f"{self._images / elapsed:.0f} images/s"
        self._lines.advance(1, f"{status}, loss {loss:.4g}" if isinstance(loss, float) else status)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking:
            self._print_metrics(f"Validation (epoch {trainer.current_epoch + 1})", trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled:
            self._print_metrics("Test", trainer, "test/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and self._lines is not None:
            print(f"Epoch {trainer.current_epoch + 1} done in {duration(self._lines.elapsed)}",
                  flush=True)  # fmt: skip

    @staticmethod
    def _print_metrics(what: str, trainer: L.Trainer, prefix: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        print(f"{what}: {shown or 'no metrics'}", flush=True)
