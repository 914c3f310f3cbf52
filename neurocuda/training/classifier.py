"""The LightningModule that trains every ANN before conversion."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from neurocuda.files import verify_checkpoint
from neurocuda.models import build_model
from neurocuda.models.qcfs import QCFS
from neurocuda.training.distill import FrozenTeacher, check_distillation, distillation_kl
from neurocuda.training.metric_states import load_metric_states, save_metric_states
from neurocuda.training.settings import check_known

log = logging.getLogger(__name__)

_DEFAULT_OPTIMIZER = {
    "name": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "clip_lr_scale": 1.0,  # QCFS clip levels: see ClassifierModule._parameter_groups
    "clip_weight_decay": None,
}
_DEFAULT_SCHEDULER = {"name": "onecycle", "pct_start": 0.25}
_DEFAULT_DISTILL = {"teacher": None, "weight": 0.0, "temperature": 4.0}


def _check_compiler() -> None:
    """``torch.compile`` builds its kernels with a C++ compiler: without one the fit would fail
    at its second step with a long trace, so say so before any work starts."""
    names = [os.environ.get("CXX"), "g++", "clang++", "c++"]
    if not any(shutil.which(name) for name in names if name):
        raise RuntimeError(
            "model.compile=true needs a C++ compiler for torch.compile (none of CXX, g++, clang++, "
            "c++ is on PATH): install one (e.g. the g++ package) or set model.compile=false."
        )


class ClassifierModule(L.LightningModule):
    """Cross-entropy classifier around :func:`neurocuda.models.build_model`.

    Everything needed to rebuild the network is a hyperparameter, so
    ``ClassifierModule.load_from_checkpoint(path)`` works without a config. ``distill``
    (``teacher``: a ClassifierModule checkpoint, ``weight``, ``temperature``) trains on
    ``(1 - weight) * cross-entropy + weight * distillation`` from the teacher's logits
    (:func:`~neurocuda.training.distill.distillation_kl`); the teacher is read at the fit's start.
    ``compile`` runs the training forward (and its backward) through ``torch.compile``: one graph
    for the fixed training batch shape, compiled at the second step (~40 s for ResNet-20 on 2 CPU
    cores) and 1.2x faster per step there (docs/results.md); evaluation stays eager, so the
    other batch shapes and the eval-mode graph cost no compilation.
    """

    def __init__(
        self,
        arch: str = "cifarnet",
        num_classes: int = 10,
        activation: str = "relu",
        activation_kwargs: dict[str, Any] | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.1,
        channels_last: bool = True,
        distill: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_known("model.distill", (distill or {}).keys(), set(_DEFAULT_DISTILL))
        self.distill = {**_DEFAULT_DISTILL, **(distill or {})}
        check_distillation(self.distill["weight"], self.distill["temperature"], "model.distill")
        if self.distill["weight"] > 0 and not self.distill["teacher"]:
            raise ValueError(
                f"model.distill.weight={self.distill['weight']} needs a teacher: "
                "model.distill.teacher=ANN.ckpt (a trained run's checkpoint)."
            )
        self._teacher: FrozenTeacher | None = None  # set_teacher, else read in on_fit_start
        self.net = build_model(
            arch, num_classes, activation, activation_kwargs, **(arch_kwargs or {})
        )
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # keyed "<split>_acc" / "<split>_loss": ModuleDict keys may not shadow Module.train
        splits = ("train", "val", "test")
        self.metrics = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in splits}
            | {f"{s}_loss": MeanMetric() for s in splits}
        )
        self.val_acc_best = MaxMetric()
        # a compiled function, not a module: the state dict keeps the keys of self.net alone
        self._compiled_forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _in_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the network's memory layout (channels-last with ``channels_last``)."""
        if self.hparams.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._in_layout(x))

    def training_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training step's forward: with ``compile``, through ``torch.compile`` from the
        second step on."""
        if self._compiled_forward is None:  # the first step runs eager: QCFS thresholds
            if self.hparams.compile:  # initialize from its batch
                self._compiled_forward = torch.compile(self.net.forward)
            return self(x)
        return self._compiled_forward(self._in_layout(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        x = self._in_layout(x)  # once, for the student and the teacher
        logits = self.training_forward(x) if split == "train" else self(x)
        loss = self.criterion(logits, y)
        loss_metric, acc_metric = self.metrics[f"{split}_loss"], self.metrics[f"{split}_acc"]
        if split == "train":  # epoch values are logged by on_train_epoch_end
            if self._teacher is not None:
                tau, weight = self.distill["temperature"], self.distill["weight"]
                distillation = distillation_kl(logits, self._teacher(x), tau)
                self.log("train/distill_loss", distillation, on_step=False, on_epoch=True)
                loss = (1 - weight) * loss + weight * distillation
            loss_metric.update(loss)
            acc_metric.update(logits, y)
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
            return loss
        loss_metric(loss)
        acc_metric(logits, y)
        self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{split}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._step(batch, "test")

    def set_teacher(self, teacher: nn.Module) -> None:
        """The network whose logits are distilled (instead of ``distill.teacher``'s)."""
        self._teacher = FrozenTeacher(teacher)

    def on_fit_start(self) -> None:
        if self.hparams.compile:  # checked here, not at load: evaluation never compiles
            _check_compiler()
        if self.distill["weight"] > 0 and self._teacher is None:
            self.set_teacher(ann_network(self.distill["teacher"], self.device))
            log.info("Distilling from %s (weight %s, temperature %s).", self.distill["teacher"],
                     self.distill["weight"], self.distill["temperature"])  # fmt: skip

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a resumed fit keeps the restored best
            self.val_acc_best.reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training loss and accuracy, then reset them for the next epoch.

        Logged here from the metrics' own states, which checkpoints keep: a resumed run first
        finishes the epoch of its (validation-end) checkpoint and logs the same values.
        """
        for name, key in (("train/loss_epoch", "train_loss"), ("train/acc", "train_acc")):
            self.log(name, self.metrics[key].compute(), prog_bar=True)
            self.metrics[key].reset()

    def _checkpointed_metrics(self) -> dict[str, Metric]:
        """Metrics whose state outlives a checkpoint: the best validation accuracy so far and
        the current epoch's training loss and accuracy."""
        return {
            "val_acc_best": self.val_acc_best,
            "train_loss": self.metrics["train_loss"],
            "train_acc": self.metrics["train_acc"],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_metric_states(checkpoint, self._checkpointed_metrics())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_metric_states(checkpoint, self._checkpointed_metrics(), self.device)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def _parameter_groups(self, opt_cfg: dict[str, Any]) -> list[dict[str, Any]]:
        """The optimizer's parameter groups; pops ``clip_lr_scale`` and ``clip_weight_decay``.

        QCFS clip levels (the ``threshold`` of every :class:`~neurocuda.models.qcfs.QCFS`) get
        their own group when either differs from the rest: learning rate ``lr * clip_lr_scale``
        and weight decay ``clip_weight_decay`` (``None``: the optimizer's ``weight_decay``).
        """
        lr_scale = opt_cfg.pop("clip_lr_scale", 1.0)
        weight_decay = opt_cfg.pop("clip_weight_decay", None)
        if not lr_scale > 0:
            raise ValueError(f"model.optimizer.clip_lr_scale={lr_scale}: must be > 0 (1: as lr).")
        if weight_decay is not None and not weight_decay >= 0:
            raise ValueError(
                f"model.optimizer.clip_weight_decay={weight_decay}: must be >= 0 (null: as "
                "weight_decay)."
            )
        clip = [m.threshold for m in self.net.modules() if isinstance(m, QCFS)]
        weight_decay = opt_cfg["weight_decay"] if weight_decay is None else weight_decay
        if not clip or (lr_scale == 1.0 and weight_decay == opt_cfg["weight_decay"]):
            return [{"params": list(self.parameters())}]
        clip_ids = {id(p) for p in clip}
        others = [p for p in self.parameters() if id(p) not in clip_ids]
        clip_group = {"params": clip, "lr": opt_cfg["lr"] * lr_scale, "weight_decay": weight_decay}
        return [{"params": others}, clip_group]

    def configure_optimizers(self) -> dict[str, Any]:
        opt_cfg = {**_DEFAULT_OPTIMIZER, **(self.hparams.optimizer or {})}
        name = opt_cfg.pop("name")
        groups = self._parameter_groups(opt_cfg)
        if name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, **opt_cfg)
        elif name == "adamw":
            opt_cfg.pop("momentum", None)
            opt_cfg.pop("nesterov", None)
            optimizer = torch.optim.AdamW(groups, **opt_cfg)
        else:
            raise ValueError(f"model.optimizer.name={name!r}: use sgd or adamw.")
        max_lr = [group["lr"] for group in optimizer.param_groups]  # each group's peak
        sched_cfg = {**_DEFAULT_SCHEDULER, **(self.hparams.scheduler or {})}
        sched_name = sched_cfg.pop("name")
        total = int(self.trainer.estimated_stepping_batches)
        if sched_name == "onecycle" and total < 4:  # OneCycleLR needs >= 2 steps per phase
            log.warning("Only %d optimizer steps: constant learning rate, no one-cycle.", total)
            return {"optimizer": optimizer}
        if sched_name == "onecycle":
            # OneCycleLR divides by its warm-up length: keep at least 2 warm-up steps on short runs
            pct_start = max(sched_cfg.pop("pct_start", 0.25), 2.0 / total)
            scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start, **sched_cfg
            )
        elif sched_name == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        elif sched_name == "none":
            return {"optimizer": optimizer}
        else:
            raise ValueError(f"model.scheduler.name={sched_name!r}: use onecycle, cosine or none.")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def ann_network(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> nn.Module:
    """The network of a ClassifierModule checkpoint, built from its own saved settings (e.g. a
    distillation teacher); a missing or damaged file raises one clear error."""
    return ClassifierModule.load_from_checkpoint(verify_checkpoint(path), device).net
