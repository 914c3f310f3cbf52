"""init_from: a fit that starts from another run's network weights (a QCFS ANN from a ReLU one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurocuda.models.qcfs import QCFS
from neurocuda.training.classifier import ClassifierModule
from neurocuda.training.init_weights import check_init_from, load_network_weights
from train import train


def test_a_qcfs_fit_starts_from_the_relu_weights(
    train_cfg, tmp_path: Path, relu_checkpoint: Path
) -> None:
    relu = relu_checkpoint
    relu_weights = torch.load(relu, weights_only=True)["state_dict"]
    qcfs = ClassifierModule(
        activation="qcfs", activation_kwargs={"levels": 4},
        arch_kwargs={"widths": [8, 16, 16, 32]},
    )  # fmt: skip
    load_network_weights(qcfs.net, relu)
    loaded = qcfs.state_dict()
    for key, value in relu_weights.items():
        if key.startswith("net."):
            assert torch.equal(loaded[key], value), key
    clips = [m for m in qcfs.net.modules() if isinstance(m, QCFS)]
    assert clips and not any(bool(m.initialized) for m in clips)  # set from the first batch

    # the same through train.py: one epoch from those weights, clip levels set from data
    cfg = train_cfg(
        "~conversion", "test=false", "model.activation=qcfs",
        "+model.activation_kwargs.levels=4", f"init_from={relu}",
        "model.optimizer.lr=0.0", "model.scheduler.name=none",
    )  # fmt: skip
    train(cfg)
    fitted = torch.load(next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")),
                        weights_only=True)["state_dict"]  # fmt: skip
    conv = next(k for k in relu_weights if k.endswith("weight") and relu_weights[k].dim() == 4)
    assert torch.equal(fitted[conv], relu_weights[conv])  # lr 0: the ReLU weights, unchanged
    thresholds = [v for k, v in fitted.items() if k.endswith(".threshold")]
    assert thresholds and all(float(t) != 1.0 for t in thresholds)  # not the placeholder


def test_weights_of_another_architecture_are_refused(relu_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"does not fit this model .*missing.*same model\.arch"):
        load_network_weights(ClassifierModule(arch="resnet20").net, relu_checkpoint)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train=false"], "starts a fit, but train=false"),
        (["ckpt_path=some.ckpt"], "Set one of them"),
        ([], "does not exist"),
    ],
)
def test_bad_init_from_settings_fail_before_any_work(
    train_cfg, tmp_path: Path, extra: list[str], message: str
) -> None:
    cfg = train_cfg("~conversion", f"init_from={tmp_path / 'missing.ckpt'}", *extra)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        check_init_from(cfg)


def test_a_resumed_run_does_not_need_its_init_from_file(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("~conversion", f"init_from={tmp_path / 'deleted.ckpt'}", "resume=true")
    assert check_init_from(cfg) is None  # the run's own checkpoint holds the weights
