"""The spiking stages ``train.py`` runs after the ANN fit: SNN fine-tuning and the final SNN test.

    python train.py experiment=quickstart finetune=snn finetune.timesteps=4 finetune.epochs=2

:func:`conversion_config` is the one place that reads the run's conversion settings (as the
SNNConversion callback does during the fit); :func:`convert_for_run` converts with them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from neurocuda.conversion import ConversionConfig, convert, evaluate_snn
from neurocuda.data.calibration import calibration_loader
from neurocuda.files import read_checkpoint, verify_checkpoint
from neurocuda.snn import SpikingModel, Surrogate
from neurocuda.training.checkpoints import finetune_hyperparameters, is_finetune_checkpoint
from neurocuda.training.classifier import ann_network
from neurocuda.training.distill import check_distillation, check_teacher_file
from neurocuda.training.instantiate import (
    conversion_group,
    conversion_settings,
    group_callbacks,
    resolve_ckpt_path,
    resume_checkpoint,
)
from neurocuda.training.settings import check_known
from neurocuda.training.snn_finetune import (
    DISTILL_KEYS,
    FINETUNE_KEYS,
    FINETUNE_RULES,
    SNNFinetuneModule,
    check_batch_norm_epochs,
    check_loss_timesteps,
    load_finetuned,
    optimizer_settings,
    snn_structure,
)
from neurocuda.training.weight_noise import check_weight_noise_bits

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """The fine-tuned SNN (its best checkpoint's weights), the stage's metrics and checkpoint,
    and the trainer that ran it (its callbacks hold the NIR checks)."""

    snn: SpikingModel
    timesteps: int
    checkpoint: str
    metrics: dict[str, float] = field(default_factory=dict)
    trainer: L.Trainer | None = None


def check_finetune_settings(cfg: DictConfig) -> None:
    """Fail before any training when ``cfg.finetune`` cannot run."""
    finetune = cfg.finetune
    if not conversion_group(cfg):
        raise ValueError(
            "finetune=snn converts the ANN with the conversion group's settings; do not remove "
            "it (~conversion)."
        )
    check_known("finetune", finetune.keys(), FINETUNE_KEYS)
    check_known("finetune.distill", (finetune.get("distill") or {}).keys(), DISTILL_KEYS)
    for key, rule in FINETUNE_RULES.items():
        if key in finetune:
            rule(f"finetune.{key}", finetune[key])
    check_loss_timesteps(loss_timesteps(finetune), int(finetune.timesteps))
    if precision(finetune) not in FINETUNE_PRECISIONS:
        raise ValueError(
            f"finetune.precision={precision(finetune)!r} is not one of {FINETUNE_PRECISIONS}: "
            "32-true trains the runtime's own float32 network, bf16-mixed its convolutions in "
            "bfloat16 (faster on CPUs with native bfloat16)."
        )
    check_distillation(*distillation(finetune), "finetune.distill")
    check_teacher_file(finetune.get("distill"), "finetune.distill")
    Surrogate(width=float(finetune.surrogate_width))  # a bad width fails here, not after the fit
    check_weight_noise_bits(finetune.get("weight_noise_bits"))
    optimizer_settings(OmegaConf.to_container(finetune.optimizer, resolve=True))
    finetune_callbacks(finetune)  # their settings (e.g. finetune.weight_average) checked now
    check_batch_norm_epochs(bool(finetune.get("batch_norm")), finetune.get("batch_norm_epochs"))
    if finetune.get("batch_norm") and finetune.get("weight_average") is not None:
        raise ValueError(
            "finetune.batch_norm=true and finetune.weight_average do not combine (an average of "
            "the weights and of the batch norms apart is not the average network); set one of "
            "them off (finetune.batch_norm=false or finetune.weight_average=null)."
        )
    if finetune.start_from in ("best", "last"):
        if not cfg.get("train", True):
            raise ValueError(
                f"finetune.start_from={finetune.start_from} needs the ANN fit of this run; with "
                "train=false give the ANN checkpoint to fine-tune: finetune.start_from=FILE.ckpt."
            )
    elif (saved := finetune_hyperparameters(finetune.start_from)) is None:  # an ANN file
        if cfg.get("train", True):
            raise ValueError(
                f"finetune.start_from={finetune.start_from} is an ANN checkpoint to fine-tune, "
                "but train=true fits a new ANN and fine-tunes that one; add train=false to "
                "fine-tune this file, or use finetune.start_from=best (or last) for the new fit."
            )
    else:  # a fine-tuning checkpoint: continue it
        if cfg.get("train", True):
            raise ValueError(
                f"finetune.start_from={finetune.start_from} is a fine-tuning checkpoint: its SNN "
                "is trained further, so an ANN fit would go unused; add train=false."
            )
        encoding = conversion_settings(cfg).encoding
        if saved.get("encoding", "direct") != encoding:
            raise ValueError(
                f"finetune.start_from={finetune.start_from} was trained on "
                f"{saved.get('encoding', 'direct')} input, but conversion.encoding={encoding}: "
                f"set conversion.encoding={saved.get('encoding', 'direct')} to train it further."
            )
        if cfg.get("test", True) and not cfg.get("ckpt_path"):
            raise ValueError(
                f"finetune.start_from={finetune.start_from} is a fine-tuning checkpoint: the test "
                "(test/acc and the SNN's gaps) needs the ANN it was converted from, "
                "ckpt_path=ANN.ckpt; or test=false."
            )
        if distillation(finetune)[0] > 0 and not (cfg.get("ckpt_path") or teacher_file(finetune)):
            raise ValueError(
                f"finetune.start_from={finetune.start_from} is a fine-tuning checkpoint: "
                "distillation (finetune.distill.weight > 0) needs the ANN it was converted from "
                "as teacher, ckpt_path=ANN.ckpt (or another, finetune.distill.teacher=FILE.ckpt); "
                "or finetune.distill.weight=0."
            )


def finetune_callbacks(finetune: DictConfig) -> list[L.Callback]:
    """The ``finetune.callbacks`` instantiated; a node that instantiates to None (an option left
    off, e.g. ``finetune.weight_average=null``) adds none."""
    nodes = (finetune.get("callbacks") or {}).values()
    try:
        return [
            callback
            for node in nodes
            if isinstance(node, DictConfig) and "_target_" in node
            if (callback := hydra.utils.instantiate(node)) is not None
        ]
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):  # a bad setting: its own message names it
            raise error.__cause__ from None
        raise


def finetune_resume_checkpoint(cfg: DictConfig) -> str | None:
    """With ``resume=true``: the newest complete checkpoint of the fine-tuning stage (in the
    directory of its ``finetune.callbacks`` checkpoints), from which the stage continues; None
    when the killed run had saved none (the stage then starts afresh) or there is no stage."""
    if not (cfg.get("resume") and cfg.get("finetune")):
        return None
    nodes = (cfg.finetune.get("callbacks") or {}).values()
    directories = {
        str(node.dirpath) for node in nodes if isinstance(node, DictConfig) and node.get("dirpath")
    }
    for directory in sorted(directories):
        if checkpoint := resume_checkpoint(Path(directory)):
            return checkpoint
    return None


def finish_resumed_fit(
    cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule
) -> None:
    """For a run resumed in its fine-tuning stage, whose ANN fit had finished: restore the fit's
    end state (weights, the checkpoint callbacks' record of the best file, epoch and step
    counters) by letting Lightning finish the fit from its newest checkpoint with only the
    checkpoint callbacks and no logger. The rest of that epoch's end (conversion, NIR export,
    deployment, their rows) happened before the kill and is not repeated; the metrics file is
    cut back by the stage's checkpoint instead."""
    callbacks, loggers = trainer.callbacks, trainer.loggers
    trainer.callbacks = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    trainer.loggers = []
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
    finally:
        trainer.callbacks, trainer.loggers = callbacks, loggers
    log.info("The ANN fit had finished before the kill: its end state restored, not fitted again")


def loss_timesteps(finetune: DictConfig) -> list[int] | None:
    """``finetune.loss_timesteps`` as a list (None when unset)."""
    steps = finetune.get("loss_timesteps")
    return None if steps is None else [int(t) for t in steps]


def distillation(finetune: DictConfig) -> tuple[float, float]:
    """``finetune.distill``'s weight and temperature (weight 0, off, without the node)."""
    distill = finetune.get("distill") or {}
    return float(distill.get("weight", 0.0)), float(distill.get("temperature", 4.0))


def teacher_file(finetune: DictConfig) -> str:
    """``finetune.distill.teacher``: an ANN checkpoint to distil from ("": the run's ANN)."""
    return str((finetune.get("distill") or {}).get("teacher") or "")


def distill_teacher(ann: nn.Module | None, path: str, device: torch.device) -> nn.Module:
    """The network whose logits the SNN distils: ``path``'s (any model of this project, e.g. the
    ReLU recipe's ANN for a QCFS network) when given, else a copy of ``ann``."""
    if not path:
        assert ann is not None  # run_finetune reads the ANN whenever no teacher file is given
        return copy.deepcopy(ann)
    log.info("Distilling from %s", path)
    return ann_network(path, device)


FINETUNE_TRAINER = {
    "check_val_every_n_epoch": 1,
    "val_check_interval": None,
    "max_steps": -1,
    "min_epochs": None,
    "min_steps": None,
    "max_time": None,
}
"""The fine-tuning trainer's own settings over the run's ``trainer`` group: the stage validates
and keeps a checkpoint at every epoch end for ``finetune.epochs`` epochs (the ANN fit's
``trainer.check_val_every_n_epoch=2`` made it save nothing, silently)."""

FINETUNE_PRECISIONS = ("32-true", "bf16-mixed")
"""Lightning precisions the fine-tuning stage trains in (``finetune.precision``)."""


def precision(finetune: DictConfig) -> str:
    """``finetune.precision`` (32-true without the setting)."""
    return str(finetune.get("precision", "32-true"))


def ann_checkpoint(cfg: DictConfig, trainer: L.Trainer) -> str:
    """The ANN checkpoint the run tests and converts: the fit's best; without a fit
    (``train=false``) a ``finetune.start_from`` ANN file, else ``ckpt_path``; "" for none."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best or cfg.get("train", True):
        return best
    start = cfg.finetune.start_from if cfg.get("finetune") else "best"
    if start in ("best", "last") or is_finetune_checkpoint(start):
        return cfg.get("ckpt_path") or ""
    return start


def ann_with_weights(model: L.LightningModule, checkpoint: str) -> nn.Module:
    """The ANN (``model.net``) with the weights of ``checkpoint`` ("": as it is)."""
    if not checkpoint:
        return model.net
    loaded = copy.deepcopy(model)
    loaded.load_state_dict(read_checkpoint(checkpoint, map_location=model.device)["state_dict"])
    log.info("Loaded the ANN checkpoint %s", checkpoint)
    return loaded.net


def conversion_config(cfg: DictConfig, datamodule: L.LightningDataModule) -> ConversionConfig:
    """The run's conversion settings (the ``conversion`` group, as the SNNConversion callback
    reads them) for the datamodule's image shape."""
    shape = tuple(next(iter(datamodule.val_dataloader()))[0].shape[1:])
    return replace(conversion_settings(cfg), input_shape=shape)


def convert_for_run(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    ann: nn.Module,
    device: torch.device | None = None,
) -> SpikingModel:
    """``ann`` converted with :func:`conversion_config` on the calibration images, on ``device``
    (default: where ``ann`` is; after a fit Lightning has moved it back to the CPU)."""
    if device is not None:
        ann = ann.to(device)
    with torch.autocast(next(ann.parameters()).device.type, enabled=False):
        return convert(ann, calibration_loader(datamodule), conversion_config(cfg, datamodule))


def run_finetune(
    cfg: DictConfig,
    trainer: L.Trainer,
    datamodule: L.LightningDataModule,
    ann: L.LightningModule,
    resume_from: str | None = None,
) -> FinetuneResult:
    """Convert the ANN (``finetune.start_from``: best checkpoint, last weights or a checkpoint
    file, see :func:`ann_checkpoint`), or take the SNN of a fine-tuning checkpoint given as
    ``finetune.start_from`` (with ``train=false``), and train the
    SNN at ``finetune.timesteps`` with a second trainer (the run's trainer settings and loggers,
    float32, ``finetune.epochs``) and the ``finetune.callbacks`` (checkpoints under
    ``checkpoints/finetune`` with verified ``.nir`` files). ``resume_from``: a checkpoint of the
    stage (:func:`finetune_resume_checkpoint`) whose training it continues."""
    check_finetune_settings(cfg)
    settings = cfg.finetune
    conversion = conversion_settings(cfg)
    device = trainer.strategy.root_device
    weight, temperature = distillation(settings)
    start = settings.start_from
    continuing = start not in ("best", "last") and is_finetune_checkpoint(start)
    teacher = teacher_file(settings)
    net = None  # the ANN: converted, or (continuing) read only as the distillation teacher
    if not continuing or (weight > 0 and not teacher):
        net = ann.net if start == "last" else ann_with_weights(ann, ann_checkpoint(cfg, trainer))
    if continuing:
        log.info("Fine-tuning further the SNN of %s", start)
        earlier = load_finetuned(start, device)
        snn, structure, metadata = (
            earlier.spiking_model(),
            earlier.hparams.structure,
            earlier.hparams.metadata,
        )
    else:
        snn = convert_for_run(cfg, datamodule, net, device)
        structure = snn_structure(dict(ann.hparams), conversion.reset, snn.input_shape)
        metadata = conversion_config(cfg, datamodule).as_metadata()
    module = SNNFinetuneModule(
        snn,
        timesteps=int(settings.timesteps),
        eval_timesteps=list(conversion.timesteps),
        encoding=conversion.encoding,
        optimizer=OmegaConf.to_container(settings.optimizer, resolve=True),
        scheduler=settings.scheduler,
        min_threshold=float(settings.min_threshold),
        label_smoothing=float(settings.label_smoothing),
        loss_timesteps=loss_timesteps(settings),
        structure=structure,
        metadata=metadata,
        distill_weight=weight,
        distill_temperature=temperature,
        teacher=distill_teacher(net, teacher, device) if weight > 0 else None,
        detach_reset=bool(settings.detach_reset),
        surrogate_width=float(settings.surrogate_width),
        channel_thresholds=bool(settings.channel_thresholds),
        weight_noise_bits=settings.get("weight_noise_bits"),
        batch_norm=bool(settings.get("batch_norm", False)),
        batch_norm_epochs=settings.get("batch_norm_epochs"),
    )
    callbacks = finetune_callbacks(settings)
    if (cfg.get("callbacks") or {}).get("progress_bar"):  # the run's progress display
        callbacks.append(hydra.utils.instantiate(cfg.callbacks.progress_bar))
    # at the stage's end the SNN the run tests is deployed; the logger group's callbacks keep
    # the metrics file in step with the stage's checkpoints and log its dashboard panels
    callbacks += group_callbacks(cfg, "deploy") + group_callbacks(cfg, "logger")
    # finetune.precision whatever the ANN used; validation runs the float32 runtime either way
    finetuner: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_epochs=int(settings.epochs),
        limit_train_batches=settings.get("train_batches") or 1.0,
        precision=precision(settings),
        callbacks=callbacks,
        logger=trainer.loggers,
        **FINETUNE_TRAINER,
    )
    log.info("Fine-tuning the SNN at T=%d for %d epoch(s)", settings.timesteps, settings.epochs)
    finetuner.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {k: float(v) for k, v in finetuner.callback_metrics.items()}
    best = finetuner.checkpoint_callback.best_model_path if finetuner.checkpoint_callback else ""
    if best:
        module = SNNFinetuneModule.load_from_checkpoint(
            verify_checkpoint(best), map_location=module.device
        )
        metrics |= module.validation_metrics  # the kept epoch's figures, not the last epoch's
    return FinetuneResult(
        snn=module.spiking_model(),
        timesteps=int(settings.timesteps),
        checkpoint=best,
        metrics=metrics,
        trainer=finetuner,
    )


ANN_FLOAT32_METRIC = "test/ann_acc_float32"
"""The ANN's test accuracy evaluated as the SNN is (float32, no autocast), on the same images: the
reference of ``test/snn_gap_T{t}``. ``test/acc`` is the trainer's, at its precision (bf16-mixed
where the device has bfloat16), so it can differ by a few hundredths of a point."""


def snn_test_metrics(
    cfg: DictConfig,
    snn: SpikingModel,
    datamodule: L.LightningDataModule,
    ann: nn.Module,
    loggers: list[Logger],
    step: int = 0,
    device: torch.device | None = None,
) -> dict[str, float]:
    """``test/snn_acc_T{t}`` and ``test/snn_gap_T{t}`` on the test set for every T of
    ``conversion.timesteps``, the gap against ``ann`` evaluated in float32 on the same images
    (:data:`ANN_FLOAT32_METRIC`), run on ``device`` (default: where ``snn`` is); also logged to
    ``loggers``."""
    if device is not None:  # the ANN too: a fine-tuned run's ANN comes back from the trainer
        snn, ann = snn.to(device), ann.to(device)  # on the CPU (Lightning's teardown moves it)
    settings = conversion_settings(cfg)
    evaluation = evaluate_snn(  # the ANN outside the trainer's autocast: float32, as the SNN
        snn, datamodule.test_dataloader(), list(settings.timesteps), ann=ann,
        encoding=settings.encoding,
    )  # fmt: skip
    ann_accuracy = float(evaluation.ann_accuracy)
    metrics = {ANN_FLOAT32_METRIC: ann_accuracy}
    metrics |= {f"test/snn_acc_T{t}": acc for t, acc in evaluation.accuracy.items()}
    metrics |= {f"test/snn_gap_T{t}": ann_accuracy - acc for t, acc in evaluation.accuracy.items()}
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()
    summary = ", ".join(f"T={t}: {a:.2%}" for t, a in evaluation.accuracy.items())
    log.info("SNN test accuracy on %d images (ANN %.2f%% in float32): %s", evaluation.images,
             100 * ann_accuracy, summary)  # fmt: skip
    return metrics
