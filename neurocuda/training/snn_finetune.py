"""The LightningModule that fine-tunes a converted spiking network at T steps (BPTT).

The network stays the runtime's integrate-and-fire network with reset by subtraction: its forward
pass is the runtime's float operations (docs/semantics.md), only the spike's gradient is a surrogate
(:func:`neurocuda.snn.spike`). Weights, biases, thresholds and initial membranes are trained; each
neuron's ``Scale(theta)`` is tied to its threshold, and thresholds are kept ``>= min_threshold``
after every step. The loss is cross-entropy on the output layer's mean over T (``o_T / T``), whose
argmax is the SNN's prediction, optionally mixed with distillation from the ANN's logits.

Reload a fine-tuned model from its checkpoint (no data needed; ``structure`` names the ANN
architecture the spiking network was converted from)::

    snn = SNNFinetuneModule.load_from_checkpoint(path, map_location="cpu").spiking_model()
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric

from neurocuda.conversion import spiking_structure
from neurocuda.conversion.settings import MAX_TIMESTEPS
from neurocuda.devices import resolve_device
from neurocuda.files import verify_checkpoint
from neurocuda.models import build_model
from neurocuda.snn import (
    Encoding,
    SpikingModel,
    Surrogate,
    encode,
    match_neuron_shapes,
    refresh,
    runtime_copy,
    set_surrogate,
    set_trainable,
    thresholds_per_channel,
)
from neurocuda.training.conv_norms import ConvNorms
from neurocuda.training.distill import FrozenTeacher, check_distillation, distillation_kl
from neurocuda.training.metric_states import load_metric_states, save_metric_states
from neurocuda.training.settings import Rule, batches, check_known, choice, integer, number
from neurocuda.training.weight_noise import check_weight_noise_bits, with_grid_noise

log = logging.getLogger(__name__)

FINETUNE_RULES: dict[str, Rule] = {
    "timesteps": integer(1, MAX_TIMESTEPS),
    "epochs": integer(1),
    "train_batches": batches(),
    "scheduler": choice("cosine", "none"),
    "min_threshold": number(0, above=True),
    "label_smoothing": number(0, 1),
}
"""``finetune`` settings whose values are checked before the ANN fit (the others: below)."""


FINETUNE_KEYS = frozenset({
    "timesteps", "loss_timesteps", "epochs", "train_batches", "start_from", "optimizer",
    "scheduler", "precision", "min_threshold", "label_smoothing", "surrogate_width",
    "detach_reset", "channel_thresholds", "weight_noise_bits", "batch_norm", "batch_norm_epochs",
    "distill", "weight_average", "callbacks",
})  # fmt: skip
"""The ``finetune`` group's settings (configs/finetune/snn.yaml); another key fails at start."""

DISTILL_KEYS = frozenset({"weight", "temperature", "teacher"})
"""``finetune.distill``'s settings."""

_DEFAULT_OPTIMIZER = {
    "name": "adamw",
    "lr": 1e-4,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "neuron_lr_scale": 1.0,
}


def optimizer_settings(optimizer: dict[str, Any] | None) -> dict[str, Any]:
    """``optimizer`` over the defaults, checked: fails on an unknown name or a scale <= 0."""
    check_known("finetune.optimizer", (optimizer or {}).keys(), set(_DEFAULT_OPTIMIZER))
    settings = {**_DEFAULT_OPTIMIZER, **(optimizer or {})}
    if settings["name"] not in ("adamw", "sgd"):
        raise ValueError(f"finetune.optimizer.name={settings['name']!r}: use adamw or sgd.")
    number(0)("finetune.optimizer.lr", settings["lr"])  # 0: the weights stay as they are
    number(0)("finetune.optimizer.weight_decay", settings["weight_decay"])
    number(0, 1)("finetune.optimizer.momentum", settings["momentum"])
    if not float(settings["neuron_lr_scale"]) > 0:
        raise ValueError(
            f"finetune.optimizer.neuron_lr_scale={settings['neuron_lr_scale']} must be > 0 (the "
            "thresholds' and initial membranes' learning rate over lr; 1: the same)."
        )
    return settings


def snn_structure(
    ann_hparams: dict[str, Any], reset: str, input_shape: Sequence[int]
) -> dict[str, Any]:
    """What :class:`SNNFinetuneModule` needs to rebuild its network from a checkpoint.

    ``ann_hparams``: the ANN's ``build_model`` arguments (e.g. a ``ClassifierModule``'s hparams;
    other keys are dropped).
    """
    keys = ("arch", "num_classes", "activation", "activation_kwargs", "arch_kwargs")
    model = {key: ann_hparams[key] for key in keys if key in ann_hparams}
    return {"model": model, "reset": reset, "input_shape": [int(d) for d in input_shape]}


def check_loss_timesteps(loss_timesteps: Sequence[int] | None, timesteps: int) -> None:
    """Fail unless each of ``loss_timesteps`` (None: the trained T alone) is in 1..``timesteps``."""
    if loss_timesteps is not None and (
        not loss_timesteps or any(not 1 <= int(t) <= timesteps for t in loss_timesteps)
    ):
        raise ValueError(
            f"finetune.loss_timesteps={list(loss_timesteps)} must be T's between 1 and "
            f"finetune.timesteps={timesteps} (the outputs of one run of {timesteps} steps), "
            "or null for the trained T alone."
        )


def check_batch_norm_epochs(batch_norm: bool, epochs: int | None) -> None:
    """Fail unless ``epochs`` (``finetune.batch_norm_epochs``) is None or, with ``batch_norm``,
    an epoch count >= 1."""
    if epochs is None:
        return
    if not batch_norm:
        raise ValueError(
            f"finetune.batch_norm_epochs={epochs} needs the batch norms it folds: add "
            "finetune.batch_norm=true, or set finetune.batch_norm_epochs=null."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"finetune.batch_norm_epochs={epochs!r} must be a number of epochs >= 1 (after them "
            "the norms are folded for good), or null (every epoch has them)."
        )


def _rebuild(structure: dict[str, Any]) -> SpikingModel:
    model = dict(structure["model"])
    arch_kwargs = model.pop("arch_kwargs", None) or {}
    ann = build_model(**model, **arch_kwargs)
    return spiking_structure(ann, structure["reset"], tuple(structure["input_shape"]))


EPOCH_MEANS = {
    "loss": "finetune/loss_epoch",
    "acc": "finetune/acc",
    "distill_loss": "finetune/distill_loss",
}
"""The training epoch's means :class:`SNNFinetuneModule` logs: metric key -> logged name."""


class SNNFinetuneModule(L.LightningModule):
    """Train ``snn`` (a converted :class:`SpikingModel`) at ``timesteps`` steps.

    Logs ``finetune/loss_step`` and ``_epoch`` (see :meth:`loss`) and ``finetune/acc`` (training,
    at ``timesteps``),
    and on validation ``val/snn_loss`` and ``val/snn_acc_T{t}`` for every ``t`` in
    ``eval_timesteps`` (from one run at the largest). ``structure`` (see :func:`snn_structure`)
    makes checkpoints loadable without ``snn``; ``metadata`` (e.g. the conversion settings) is
    recorded in exported NIR files. ``optimizer``: ``name`` adamw | sgd, ``lr``, ``weight_decay``
    (weights only, not biases, thresholds or initial membranes), ``momentum`` (sgd),
    ``neuron_lr_scale`` (the thresholds' and initial membranes' learning rate over ``lr``; see
    :func:`optimizer_settings`); ``scheduler``: cosine | none. ``loss_timesteps``: see
    :func:`check_loss_timesteps`.
    ``distill_weight`` > 0 mixes in distillation from ``teacher`` (the ANN; see
    :meth:`distillation_loss`): ``(1 - weight) * loss + weight * distillation``.
    ``surrogate_width`` and ``detach_reset``: how backprop treats the spike
    (:class:`~neurocuda.snn.Surrogate`; the forward pass is the same). ``channel_thresholds``:
    a layer with one threshold gets one per channel to train
    (:func:`~neurocuda.snn.thresholds_per_channel`). ``weight_noise_bits``: training steps see every
    conv/linear weight moved by uniform noise of a ``bits``-bit grid's step
    (:mod:`neurocuda.training.weight_noise`); None: clean weights. ``batch_norm``: training steps
    normalise each folded convolution's output with batch statistics, folded back into the
    weights for validation, checkpoints and :meth:`spiking_model`
    (:mod:`neurocuda.training.conv_norms`); ``batch_norm_epochs``: after that many epochs they are
    folded into the trained weights for good and the rest of the epochs train the plain network
    (None: every epoch has them).
    """

    TRAINING_STATE = "unfolded_state_dict"
    """Checkpoint key, with ``batch_norm``: the weights before folding and the norms (the
    ``state_dict`` holds the folded network), from which a resumed fit continues exactly."""

    def __init__(
        self,
        snn: SpikingModel | None = None,
        timesteps: int = 4,
        eval_timesteps: Sequence[int] = (1, 2, 4, 8),
        encoding: Encoding = "direct",
        optimizer: dict[str, Any] | None = None,
        scheduler: str = "cosine",
        min_threshold: float = 1e-3,
        label_smoothing: float = 0.0,
        loss_timesteps: Sequence[int] | None = None,
        structure: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        distill_weight: float = 0.0,
        distill_temperature: float = 4.0,
        teacher: nn.Module | None = None,
        detach_reset: bool = False,
        surrogate_width: float = 1.0,
        channel_thresholds: bool = False,
        weight_noise_bits: int | None = None,
        batch_norm: bool = False,
        batch_norm_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if timesteps < 1 or any(int(t) < 1 for t in eval_timesteps):
            raise ValueError(
                f"finetune.timesteps={timesteps} and eval timesteps {list(eval_timesteps)} must "
                "be >= 1."
            )
        check_loss_timesteps(loss_timesteps, timesteps)
        optimizer_settings(optimizer)
        FINETUNE_RULES["min_threshold"]("finetune.min_threshold", min_threshold)
        FINETUNE_RULES["scheduler"]("finetune.scheduler", scheduler)
        check_distillation(distill_weight, distill_temperature, "finetune.distill")
        check_weight_noise_bits(weight_noise_bits)
        check_batch_norm_epochs(batch_norm, batch_norm_epochs)
        surrogate = Surrogate(width=surrogate_width, detach_reset=detach_reset)
        if snn is None:
            if structure is None:
                raise ValueError(
                    "SNNFinetuneModule needs snn= (a converted SpikingModel) or structure= (as "
                    "saved in a checkpoint written with it)."
                )
            snn = _rebuild(structure)
        self.save_hyperparameters(ignore=["snn", "teacher"])
        self.snn = snn.train()  # no layer depends on it; Lightning warns about eval-mode modules
        if channel_thresholds:
            thresholds_per_channel(self.snn)
        set_trainable(self.snn, True)
        self.snn.requires_grad_(True)
        set_surrogate(self.snn, surrogate)
        self.conv_norms = ConvNorms(self.snn) if batch_norm else None
        self._evaluated: SpikingModel | None = None
        self._val_generator: torch.Generator | None = None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # the training epoch's means, logged at its end from states that checkpoints keep
        self.epoch_means = nn.ModuleDict({key: MeanMetric() for key in EPOCH_MEANS})
        self.eval_timesteps = sorted({int(t) for t in eval_timesteps} | {timesteps})
        self.loss_timesteps = sorted({int(t) for t in loss_timesteps or (timesteps,)})
        self.validation_metrics: dict[str, float] = {}
        """The validation figures (``val/...``) of the epoch these weights were saved at (set
        when loaded from a checkpoint of the stage)."""
        self.set_teacher(teacher)

    def set_teacher(self, teacher: nn.Module | None) -> None:
        """The ANN whose logits are distilled (frozen, in eval mode). Held outside the module's
        children, so it is neither trained nor saved in checkpoints."""
        self._teacher = None if teacher is None else FrozenTeacher(teacher)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The output trace ``[T, B, classes]`` (``T`` = ``timesteps`` or the training T; Poisson
        input drawn from ``generator``)."""
        steps = timesteps or self.hparams.timesteps
        return self.snn(encode(x, steps, self.hparams.encoding, generator=generator), steps)

    def _step_generator(self) -> torch.Generator:
        """The random draws of one training step (Poisson input, weight noise): seeded by the
        run's seed and the step, so a resumed run draws what the killed one would have (the
        global generator's state is not in the checkpoint)."""
        seed = np.random.SeedSequence([torch.initial_seed(), self.global_step]).generate_state(1)
        return torch.Generator(device=self.device).manual_seed(int(seed[0]))

    def training_trace(self, x: torch.Tensor) -> torch.Tensor:
        """The output trace a training step learns from: :meth:`forward` at the training T, with
        fresh weight noise when ``weight_noise_bits`` is set (the module's weights stay clean)."""
        generator = self._step_generator()
        with self._norms_applied():
            bits = self.hparams.weight_noise_bits
            if bits is None:
                return self(x, generator=generator)
            steps = self.hparams.timesteps
            params = dict(self.snn.named_parameters())
            noisy = {
                name: with_grid_noise(params[name], bits, generator)
                for name in self._weight_names()
            }
            inputs = encode(x, steps, self.hparams.encoding, generator=generator)
            return torch.func.functional_call(self.snn, noisy, (inputs, steps))

    def _norms_applied(self) -> contextlib.AbstractContextManager[None]:
        """Within: the batch norms of ``batch_norm`` after their convolutions (none without)."""
        norms = self.conv_norms
        return contextlib.nullcontext() if norms is None else norms.applied(self.snn)

    def on_train_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        norms = self.conv_norms
        if norms is not None and not norms.calibrated:  # the identity for the first batch
            steps = self.hparams.timesteps
            norms.calibrate(self.snn, lambda: self(batch[0], steps))

    def on_train_epoch_start(self) -> None:
        epochs = self.hparams.batch_norm_epochs
        if self.conv_norms is not None and epochs is not None and self.current_epoch >= epochs:
            # for good: the plain network trains on. The optimizer's state stays: AdamW's
            # update is unchanged by the fold's per-channel rescale; SGD's momentum is not
            self.conv_norms.fold_into(self.snn)
            self.conv_norms = None
            log.info("Batch norms folded into the SNN's weights after %d epoch(s)", epochs)

    def evaluated_network(self) -> SpikingModel:
        """The network validation measures and checkpoints hold: ``snn``, its batch norms folded
        into the weights (a copy) when ``batch_norm`` is set."""
        if self.conv_norms is None or not self.conv_norms.calibrated:
            return self.snn
        return self.conv_norms.fold_into(copy.deepcopy(self.snn))

    def _weight_names(self) -> list[str]:
        """The names of the conv/linear weights in ``snn`` (not biases, thresholds or initial
        membranes): what weight decay and weight noise apply to."""
        layers = self.snn.neuron_layers().values()
        neurons = {id(p) for layer in layers for p in (layer.threshold, layer.v_init)}
        return [
            name for name, p in self.snn.named_parameters() if p.dim() > 1 and id(p) not in neurons
        ]

    def loss(self, trace: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the output means ``o_t / t`` at each of ``loss_timesteps``."""
        losses = [self.criterion(trace[t - 1] / t, y) for t in self.loss_timesteps]
        return torch.stack(losses).mean()

    def distillation_loss(self, trace: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Mean over ``loss_timesteps`` of the KL divergence from the teacher's softmax to the
        output means' at temperature ``tau``, times ``tau**2`` (Hinton et al., 2015)."""
        tau = self.hparams.distill_temperature
        losses = [
            distillation_kl(trace[t - 1] / t, teacher_logits, tau) for t in self.loss_timesteps
        ]
        return torch.stack(losses).mean()

    def on_fit_start(self) -> None:
        teacher = self._teacher
        if self.hparams.distill_weight > 0:
            if teacher is None:
                raise ValueError(
                    "finetune.distill.weight > 0 needs the ANN as teacher (SNNFinetuneModule("
                    "teacher=...) or set_teacher); or finetune.distill.weight=0."
                )
            teacher.to(self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        steps = self.hparams.timesteps
        trace = self.training_trace(x)
        loss = self.loss(trace, y)
        weight = self.hparams.distill_weight
        if weight > 0:
            distillation = self.distillation_loss(trace, self._teacher(x))
            self.epoch_means["distill_loss"].update(distillation.detach(), len(y))
            loss = (1 - weight) * loss + weight * distillation
        logits = trace[-1] / steps
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("finetune/loss_step", loss, prog_bar=True)
        self.epoch_means["loss"].update(loss.detach(), len(y))
        self.epoch_means["acc"].update(acc, len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the epoch's means (``finetune/loss_epoch``, ``finetune/acc``, with distillation
        ``finetune/distill_loss``) and reset them for the next epoch."""
        for key, name in EPOCH_MEANS.items():
            if key != "distill_loss" or self.hparams.distill_weight > 0:
                self.log(name, self.epoch_means[key].compute(), prog_bar=key == "acc")
            self.epoch_means[key].reset()

    def on_validation_epoch_start(self) -> None:
        self._evaluated = self.evaluated_network()

    def on_validation_epoch_end(self) -> None:
        self._evaluated = None
        self._val_generator = None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        snn = self._evaluated or self.snn
        steps = max(self.eval_timesteps)
        if self._val_generator is None:  # Poisson input drawn as evaluate_snn draws it (seed 0):
            self._val_generator = torch.Generator(device=self.device).manual_seed(0)  # repeatable
        generator = self._val_generator
        with torch.autocast(self.device.type, enabled=False):  # the runtime's float32 network
            trace = snn(encode(x, steps, self.hparams.encoding, generator=generator), steps)
        steps = self.hparams.timesteps
        loss = self.loss(trace, y)
        self.log("val/snn_loss", loss, on_epoch=True, batch_size=len(y))
        for t in self.eval_timesteps:
            acc = (trace[t - 1].argmax(-1) == y).float().mean()
            prog_bar = t == steps
            self.log(f"val/snn_acc_T{t}", acc, on_epoch=True, batch_size=len(y), prog_bar=prog_bar)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        refresh(self.snn, self.hparams.min_threshold)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_metric_states(checkpoint, dict(self.epoch_means))
        if self.conv_norms is not None:  # the folded network: what validation measured
            state = checkpoint["state_dict"]
            if self.conv_norms.calibrated:  # and the one in training, for a resumed fit
                checkpoint[self.TRAINING_STATE] = dict(state)
            folded = self.evaluated_network().state_dict()
            state.update({f"snn.{key}": value for key, value in folded.items()})
            for key in [key for key in state if key.startswith("conv_norms.")]:
                del state[key]
        # saved after validation: keep its figures with the weights they were measured on
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}
        checkpoint["validation_metrics"] = {
            name: float(value) for name, value in metrics.items() if name.startswith("val/")
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        match_neuron_shapes(self.snn, checkpoint["state_dict"], prefix="snn.")
        load_metric_states(checkpoint, dict(self.epoch_means), self.device)
        fitting = self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING
        if self.conv_norms is not None and fitting and self.TRAINING_STATE in checkpoint:
            # a resumed fit goes on from the unfolded weights and their trained norms
            checkpoint["state_dict"] = checkpoint[self.TRAINING_STATE]
            self.conv_norms.calibrated = True
        elif self.conv_norms is not None:  # saved folded: the norms start again, uncalibrated
            norms = self.conv_norms.state_dict()
            checkpoint["state_dict"].update({f"conv_norms.{k}": v for k, v in norms.items()})
        self.validation_metrics = dict(checkpoint.get("validation_metrics", {}))

    def spiking_model(self) -> SpikingModel:
        """The fine-tuned network as the runtime holds it (a copy: buffers, no gradients; batch
        norms folded)."""
        return runtime_copy(self.evaluated_network())

    def configure_optimizers(self) -> dict[str, Any]:
        settings = optimizer_settings(self.hparams.optimizer)
        lr, weight_decay, momentum = settings["lr"], settings["weight_decay"], settings["momentum"]
        layers = self.snn.neuron_layers().values()
        neurons = [p for layer in layers for p in (layer.threshold, layer.v_init)]
        params = dict(self.snn.named_parameters())
        weights = [params[name] for name in self._weight_names()]
        ids = {id(p) for p in neurons + weights}
        biases = [p for p in self.parameters() if id(p) not in ids]  # and the batch norms
        groups = [
            {"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0},
            {"params": neurons, "weight_decay": 0.0, "lr": lr * settings["neuron_lr_scale"]},
        ]
        if settings["name"] == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr)
        else:
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
        if self.hparams.scheduler == "none":
            return {"optimizer": optimizer}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def load_finetuned(
    checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> SNNFinetuneModule:
    """The :class:`SNNFinetuneModule` of a fine-tuning checkpoint on ``device``; its
    :meth:`~SNNFinetuneModule.spiking_model` is the network the runtime runs."""
    return SNNFinetuneModule.load_from_checkpoint(
        verify_checkpoint(checkpoint), map_location=resolve_device(device)
    )
