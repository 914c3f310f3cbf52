"""Lightning glue: convert the ANN to an SNN at checkpoints and log its accuracy per T."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.checkpoint import CheckpointWithNIR
from neurocuda.conversion import ConversionConfig, ConversionResult, convert, evaluate_snn
from neurocuda.training.checkpoints import checkpoint_step

log = logging.getLogger(__name__)


class SNNConversion(L.Callback):
    """Every ``every_n_epochs`` epochs and at the last one, convert a copy of ``pl_module.net``.

    Logs ``snn/acc_T{t}``, ``snn/gap_T{t}`` (ANN minus SNN on the same validation images),
    ``snn/spike_rate/<layer>`` and ``snn/synops_per_image``; keeps the outcome in :attr:`latest`
    for callbacks that run after it (NIR export, deployment). ``settings`` is the one conversion
    settings object, built by ``train.py`` from the ``conversion`` group.
    """

    def __init__(
        self,
        settings: ConversionConfig | None = None,
        every_n_epochs: int = 1,
        eval_subset: int | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"conversion.every_n_epochs={every_n_epochs} must be >= 1.")
        if eval_subset is not None and eval_subset < 1:
            raise ValueError(f"conversion.eval_subset={eval_subset} must be >= 1 (or null: all).")
        self.settings = settings or ConversionConfig()
        self.every_n_epochs = every_n_epochs
        self.eval_subset = eval_subset
        self.latest: ConversionResult | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning runs ModelCheckpoint callbacks last; in its automatic mode a checkpoint saves
        # in on_train_epoch_end, i.e. after this callback. Saving at validation end instead (same
        # epoch, same weights) makes this epoch's checkpoint exist when we convert it.
        for ckpt in trainer.checkpoint_callbacks:
            if isinstance(ckpt, ModelCheckpoint) and ckpt._save_on_train_epoch_end is None:
                ckpt._save_on_train_epoch_end = False
                log.info("ModelCheckpoint now saves at validation end, before SNN conversion.")

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last or trainer.should_stop

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # under DDP one process converts, evaluates (on all validation images) and writes the
        # files; the others wait for it at their next step's gradient all-reduce
        if trainer.sanity_checking or not self._due(trainer) or not trainer.is_global_zero:
            return
        val_loader = _validation_loader(trainer)
        ann = pl_module.net
        settings = replace(self.settings, input_shape=tuple(next(iter(val_loader))[0].shape[1:]))
        with torch.autocast(pl_module.device.type, enabled=False):
            snn = convert(ann, _calibration_data(trainer), settings)
            evaluation = evaluate_snn(
                snn, val_loader, settings.timesteps, ann=ann, encoding=settings.encoding,
                max_images=self.eval_subset,
            )  # fmt: skip
        self.latest = ConversionResult(
            snn=snn,
            settings=settings,
            checkpoint_paths=saved_this_step(trainer),
            epoch=trainer.current_epoch,
            accuracy=evaluation.accuracy,
            ann_accuracy=float(evaluation.ann_accuracy),
            evaluation=evaluation,
        )
        metrics = {f"snn/acc_T{t}": acc for t, acc in evaluation.accuracy.items()}
        metrics |= {f"snn/gap_T{t}": gap for t, gap in evaluation.gap.items()}
        metrics |= {f"snn/spike_rate/{n}": r for n, r in evaluation.spike_rates.items()}
        metrics["snn/synops_per_image"] = evaluation.synops_per_image
        metrics["snn/ann_acc"] = float(evaluation.ann_accuracy)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, rank_zero_only=True)
        summary = ", ".join(f"T={t}: {a:.2%}" for t, a in evaluation.accuracy.items())
        log.info(
            "Epoch %d SNN accuracy on %d val images (ANN %.2f%%): %s",
            trainer.current_epoch, evaluation.images, 100 * evaluation.ann_accuracy, summary,
        )  # fmt: skip


def _validation_loader(trainer: L.Trainer) -> object:
    """All validation images: the trainer's loader, except under DDP, whose loaders hold one
    process's share of them (the datamodule's own loader then)."""
    datamodule = trainer.datamodule
    loader = None if trainer.world_size > 1 else _first(trainer.val_dataloaders)
    if loader is None and datamodule is not None:
        loader = datamodule.val_dataloader()
    if loader is None:
        raise RuntimeError("SNNConversion needs validation data (a val_dataloader).")
    return loader


def _calibration_data(trainer: L.Trainer) -> object:
    """Un-augmented training images in a fixed order when the datamodule offers them."""
    datamodule = trainer.datamodule
    if datamodule is not None and hasattr(datamodule, "calibration_dataloader"):
        return datamodule.calibration_dataloader()
    return trainer.train_dataloader


def saved_this_step(trainer: L.Trainer) -> list[str]:
    """Checkpoint files that hold the weights of this global step (the weights converted here).

    A :class:`CheckpointWithNIR` names the files it wrote at this step; a plain ModelCheckpoint's
    ``best_model_path`` (and ``last_model_path``, for ``save_last``) is the file it wrote last
    when ``save_top_k`` is 1. A resumed run first finishes the epoch of the checkpoint it restored
    (saved at validation end, before this hook); there its callbacks have saved nothing yet, and
    the restored files of this step in the callback's own folder are the ones: a ``ckpt_path``
    from another run's folder (whose paths the callback restores too) is that run's, not to be
    written over.
    """
    paths: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        written = [p for p in (cb.best_model_path, cb.last_model_path) if p and p not in paths]
        if cb._last_global_step_saved == trainer.global_step:
            mine = cb.written_at(trainer.global_step) if isinstance(cb, CheckpointWithNIR) else []
            paths += [p for p in mine or written if p not in paths]
        elif cb._last_global_step_saved == 0 and trainer.ckpt_path:  # nothing saved since restore
            paths += [p for p in written if _inside(p, cb.dirpath)
                      and checkpoint_step(p) == trainer.global_step]  # fmt: skip
    return paths


def _inside(path: str, folder: str | None) -> bool:
    return folder is not None and Path(path).resolve().parent == Path(folder).resolve()


def _first(loaders: object) -> object:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders
