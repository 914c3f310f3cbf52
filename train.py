"""Train an ANN, then convert, export, verify and deploy it, all as configured with Hydra.

python train.py experiment=quickstart
python train.py model=resnet18 deploy=loihi2        # the GPU when there is one
python train.py experiment=quickstart finetune=snn finetune.timesteps=4 finetune.epochs=2
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

import neurocuda.training.resolvers  # noqa: F401  (registers ${sweep_group:} and ${job_label:})
from callbacks.summary import run_summary
from neurocuda.cli import USER_ERRORS, exit_with_one_line
from neurocuda.reporting.run_summary import report_summary
from neurocuda.reporting.sweep_summary import csv_metrics
from neurocuda.training.compose import saved_run_config
from neurocuda.training.distill import check_teacher_file
from neurocuda.training.finetune_stage import (
    ann_checkpoint,
    ann_with_weights,
    check_finetune_settings,
    convert_for_run,
    finetune_resume_checkpoint,
    finish_resumed_fit,
    run_finetune,
    snn_test_metrics,
)
from neurocuda.training.init_weights import check_init_from, load_network_weights
from neurocuda.training.instantiate import (
    conversion_group,
    finish_loggers,
    instantiate_callbacks,
    instantiate_loggers,
    resolve_ckpt_path,
)
from neurocuda.training.library_warnings import filter_library_warnings
from neurocuda.training.settings import check_sweep_launch, validate_run_settings

log = logging.getLogger(__name__)
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))  # paths.root_dir


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and fine-tune the SNN, with ``finetune``) and test the model described by ``cfg``;
    return the logged metrics, with the SNN's on the test set (``test/snn_acc_T{t}``)."""
    validate_run_settings(cfg)  # bad settings fail here, before any data or training
    filter_library_warnings()
    init_from = check_init_from(cfg)
    check_teacher_file(cfg.model.get("distill"), "model.distill")
    if cfg.get("finetune"):
        check_finetune_settings(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    if init_from:
        load_network_weights(model.net, init_from)
    callbacks = instantiate_callbacks(cfg)
    loggers = instantiate_loggers(cfg)
    # without a checkpoint callback (callbacks=none) Lightning would add its own, writing
    # checkpoints no resume finds and no .nir goes with
    no_checkpoints = {} if any(isinstance(c, ModelCheckpoint) for c in callbacks) else {
        "enable_checkpointing": False}  # fmt: skip
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, **no_checkpoints
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    failed = True
    try:
        finetune_resume = finetune_resume_checkpoint(cfg)  # killed in the fine-tuning stage
        if cfg.get("train", True) and finetune_resume:
            finish_resumed_fit(cfg, trainer, model, datamodule)
        elif cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
        metrics = dict(trainer.callback_metrics)
        if cfg.get("resume"):  # a restored fit does not validate its restored epoch again
            metrics = {**csv_metrics(Path(cfg.paths.output_dir)), **metrics}
        best = ann_checkpoint(cfg, trainer)  # before a test restores older checkpoint states
        snn = finetuned = None
        if cfg.get("finetune"):
            finetuned = run_finetune(cfg, trainer, datamodule, model, finetune_resume)
            snn = finetuned.snn
            metrics.update(finetuned.metrics)
        if cfg.get("test", True):
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(trainer.callback_metrics)
            if conversion_group(cfg):  # the fine-tuned SNN, else the best ANN converted
                device = trainer.strategy.root_device  # the trainer's: trainer=cpu stays on CPU
                ann = ann_with_weights(model, best)  # the ANN test/acc measured
                snn = snn or convert_for_run(cfg, datamodule, ann, device)
                metrics.update(
                    snn_test_metrics(
                        cfg, snn, datamodule, ann, loggers, trainer.global_step, device
                    )
                )
        metrics = {k: float(v) for k, v in metrics.items()}
        if trainer.is_global_zero:  # one summary (console and summary.json) per run
            report_summary(run_summary(trainer, metrics, cfg.paths.output_dir, finetuned, best))
        failed = False
    finally:
        finish_loggers(loggers, failed)
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``optimized_metric`` for sweepers."""
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if cfg.get("resume"):  # a killed run continues with its own saved config
            hydra_cfg = HydraConfig.get()
            cfg = saved_run_config(hydra_cfg.runtime.output_dir, hydra_cfg.overrides.task)
        check_sweep_launch(cfg, sweeping)
        metrics = train(cfg)
    except Exception as error:
        if sweeping:  # Hydra records the failed job and runs the others; the job's log keeps
            log.error("%s", error)  # why (scripts/summarize.py marks the run failed with it)
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(error, USER_ERRORS):
            raise
        exit_with_one_line(error, "HYDRA_FULL_ERROR=1 shows the traceback")  # a setting, a file
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged: {sorted(metrics)}.")
    return metrics[name]


if __name__ == "__main__":
    main()
