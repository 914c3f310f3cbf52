"""Knowledge distillation from an ANN's logits (Hinton et al., 2015), shared by the ANN fit
(``model.distill``) and the SNN fine-tuning (``finetune.distill``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurocuda.training.checkpoints import refuse_finetune_checkpoint


def check_distillation(weight: float, temperature: float, group: str) -> None:
    """Fail unless ``weight`` is in [0, 1] and ``temperature`` > 0 (``group``: the config key)."""
    if not 0.0 <= weight <= 1.0 or temperature <= 0:
        raise ValueError(
            f"{group}.weight={weight} must be in [0, 1] (0: off) and "
            f"{group}.temperature={temperature} > 0."
        )


def check_teacher_file(distill: dict[str, Any] | None, group: str) -> None:
    """Fail, before any data or training, when ``distill`` names a teacher file that is not
    there, or that holds a fine-tuned SNN instead of an ANN."""
    distill = distill or {}
    teacher = distill.get("teacher")
    if distill.get("weight", 0.0) > 0 and teacher:
        if not Path(teacher).is_file():
            raise FileNotFoundError(
                f"{group}.teacher={teacher} does not exist: give a trained run's checkpoint "
                "(e.g. RUN_DIR/checkpoints/epoch_046.ckpt)."
            )
        refuse_finetune_checkpoint(teacher, f"{group}.teacher")


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``tau**2 KL(softmax(teacher / tau) || softmax(student / tau))``, the batch mean."""
    return (
        F.kl_div(
            F.log_softmax(student_logits.float() / temperature, dim=-1),
            F.log_softmax(teacher_logits.float() / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


class FrozenTeacher:
    """The ANN whose logits are distilled: eval mode, no gradients, and not a child module of the
    student (a plain attribute), so it is neither trained nor saved in the student's checkpoints."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval().requires_grad_(False)

    def to(self, device: torch.device) -> FrozenTeacher:
        self.net.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)
