"""Gather a run's :class:`~neurocuda.reporting.run_summary.RunSummary` from its callbacks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.deployment import Deployment
from callbacks.finetune_nir import FinetuneNIRRoundTrip
from callbacks.lookup import find_callback
from callbacks.nir_round_trip import NIRRoundTrip
from neurocuda.deploy.report import summarize
from neurocuda.reporting.run_summary import (
    FinetuneSummary,
    NIRCheck,
    RunSummary,
    accuracy_per_timestep,
)
from neurocuda.training.finetune_stage import ANN_FLOAT32_METRIC, FinetuneResult


def _nir_check(
    round_trip: NIRRoundTrip | None, checkpoint: str, trainer: L.Trainer
) -> NIRCheck | None:
    """The check of ``<checkpoint>.nir`` (re-executed now when this process did not write it: a
    resumed run's file from before the kill); else of the newest file checked that is still on
    disk (the last conversion's: ModelCheckpoint deletes a superseded best with its ``.nir``).
    A file outside the run directory (beside an ANN given with ``ckpt_path`` or
    ``finetune.start_from``) is another run's, made with its settings: not re-checked here."""
    if round_trip is None:
        return None
    wanted = Path(checkpoint).with_suffix(".nir") if checkpoint else None
    unchecked = wanted is not None and str(wanted) not in round_trip.checks and wanted.is_file()
    run_dir = Path(trainer.default_root_dir).resolve() if unchecked else None
    # no datamodule: neither fit nor test ran
    if unchecked and trainer.datamodule is not None and run_dir in wanted.resolve().parents:
        round_trip.verify_saved(trainer, wanted, checkpoint)
    kept = [path for path in round_trip.checks if Path(path).is_file()]
    path = str(wanted) if str(wanted) in kept else kept[-1] if kept else None
    return NIRCheck.from_report(path, round_trip.checks[path]) if path else None


def _snn_source(
    ckpt: ModelCheckpoint | None, finetuned: FinetuneResult | None, ann_file: str
) -> str:
    """Which SNN ``train.py`` tested: the fine-tuned one, else the kept ANN checkpoint converted
    (the best by its monitor, or with ``monitor: null`` the last epoch's), else another ANN
    file given to the run, else the final weights."""
    if finetuned is not None:
        return f"the fine-tuned SNN (trained at T={finetuned.timesteps})"
    if not ann_file:
        return "the final ANN weights, converted"
    if ckpt is None or ann_file != ckpt.best_model_path:
        return "the given ANN checkpoint, converted"
    if ckpt.monitor:
        return "the best ANN checkpoint, converted"
    return "the last epoch's ANN checkpoint, converted"


def run_summary(
    trainer: L.Trainer,
    metrics: dict[str, float],
    run_dir: str,
    finetuned: FinetuneResult | None = None,
    ann_file: str = "",
) -> RunSummary:
    """The summary of a finished run: test metrics (``test/acc``, ``test/snn_acc_T{t}``), the
    NIR check of the tested checkpoint's file, the deployment report and the checkpoints.
    ``ann_file``: the ANN checkpoint the run tested and converted
    (``finetune_stage.ann_checkpoint``): its fit's, or without a fit the one it was given
    (a test with ``ckpt_path`` restores that file's own, older checkpoint state)."""
    ckpt = trainer.checkpoint_callback
    saved = ckpt.best_model_path or ckpt.last_model_path if ckpt is not None else ""
    checkpoint = ann_file or saved
    deployment = find_callback(trainer, Deployment)  # after fine-tuning: the stage's trainer's
    if finetuned is not None and finetuned.trainer is not None:
        deployment = find_callback(finetuned.trainer, Deployment) or deployment
    snn_test = accuracy_per_timestep(metrics, "test/snn_acc_T")
    summary = RunSummary(
        run_dir=run_dir,
        checkpoint=checkpoint,
        ann_test_accuracy=float(metrics["test/acc"]) if "test/acc" in metrics else None,
        ann_test_accuracy_float32=metrics.get(ANN_FLOAT32_METRIC),
        snn_test_accuracy=snn_test,
        nir=_nir_check(find_callback(trainer, NIRRoundTrip), checkpoint, trainer),
    )
    if snn_test:  # which SNN train.py tested (finetune_stage.best_ann, run_finetune)
        summary.snn_source = _snn_source(ckpt, finetuned, ann_file)
    if deployment is not None and deployment.report is not None:
        summary.deployment = summarize(deployment.report, deployment.report_paths["markdown"])
    if finetuned is not None:
        round_trip = finetuned.trainer and find_callback(finetuned.trainer, FinetuneNIRRoundTrip)
        summary.finetune = FinetuneSummary(
            timesteps=finetuned.timesteps,
            checkpoint=finetuned.checkpoint,
            val_accuracy=accuracy_per_timestep(finetuned.metrics, "val/snn_acc_T"),
            nir=_nir_check(round_trip, finetuned.checkpoint, finetuned.trainer),
        )
    return summary
