"""model.distill: the ANN fit with distillation from a trained ANN's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from neurocuda.training.classifier import ClassifierModule
from neurocuda.training.distill import distillation_kl
from train import train

WIDTHS = {"widths": [8, 16, 16, 32]}


def test_the_loss_mixes_cross_entropy_and_the_teachers_kl() -> None:
    torch.manual_seed(0)
    teacher = ClassifierModule(arch_kwargs=WIDTHS).eval()
    student = ClassifierModule(
        arch_kwargs=WIDTHS, distill={"teacher": "unused.ckpt", "weight": 0.25, "temperature": 2.0}
    ).eval()
    student.set_teacher(teacher.net)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    with torch.no_grad():
        loss = student.training_step((x, y), 0)
        s, t = student(x), teacher(x)
        kl = 4 * (t.div(2).softmax(-1) * (t.div(2).log_softmax(-1) - s.div(2).log_softmax(-1)))
        expected = 0.75 * F.cross_entropy(s, y, label_smoothing=0.1) + 0.25 * kl.sum(-1).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_kl(s, s, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert not any("teacher" in k for k in student.state_dict())  # never saved


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"weight": 0.5}, "needs a teacher: model.distill.teacher=ANN.ckpt"),
        ({"teacher": "a.ckpt", "weight": 1.5}, r"model.distill.weight=1.5 must be in \[0, 1\]"),
        ({"teacher": "a.ckpt", "weight": 0.5, "temperature": 0}, "temperature=0 > 0"),
    ],
)
def test_bad_distillation_settings_are_refused(distill: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifierModule(distill=distill)


def test_a_fit_distils_from_a_trained_runs_checkpoint(
    train_cfg, tmp_path: Path, relu_checkpoint: Path
) -> None:
    teacher = relu_checkpoint
    missing = f"+model.distill={{teacher: {tmp_path}/no.ckpt, weight: 1}}"
    with pytest.raises(FileNotFoundError, match=r"model\.distill\.teacher=.*does not exist"):
        train(train_cfg("~conversion", missing))
    metrics = train(train_cfg("~conversion", f"+model.distill={{teacher: {teacher}, weight: 0.5}}"))
    assert metrics["train/distill_loss"] > 0
    saved = torch.load(next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")),
                       weights_only=True)  # fmt: skip
    assert saved["hyper_parameters"]["distill"]["teacher"] == str(teacher)
    assert not any("teacher" in k for k in saved["state_dict"])
