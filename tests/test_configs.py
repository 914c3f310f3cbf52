"""Every option of every config group composes, and the instantiable ones instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from neurocuda.training.compose import compose_train_config
from tests.conftest import ROOT

GROUPS = [
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "conversion",
    "deploy",
    "finetune",
    "hparams_search",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in _options(group)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_train_config([f"{group}={option}"], tmp_path)
    assert cfg.data._target_ and cfg.model._target_ and cfg.trainer._target_
    if group == "model":
        model = hydra.utils.instantiate(cfg.model)
        assert model.hparams.arch == cfg.model.arch
    if group == "data":
        dm = hydra.utils.instantiate(cfg.data)
        assert dm.hparams.batch_size == cfg.data.batch_size
    if group == "finetune":
        checkpoint = hydra.utils.instantiate(cfg.finetune.callbacks.model_checkpoint)
        assert checkpoint.monitor == f"val/snn_acc_T{cfg.finetune.timesteps}"


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="Could not find 'model/resnet99'"):
        compose_train_config(["model=resnet99"], tmp_path)
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'model\.actvation'"):
        compose_train_config(["model.actvation=qcfs"], tmp_path)


def test_precision_follows_the_device(monkeypatch) -> None:
    from neurocuda.training import resolvers

    monkeypatch.setattr(resolvers.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(resolvers, "_cpu_has_bf16", lambda: False)
    assert resolvers.fast_precision("auto") == "32-true"  # emulated bf16 is 8.6x slower
    monkeypatch.setattr(resolvers, "_cpu_has_bf16", lambda: True)
    assert resolvers.fast_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(resolvers.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(resolvers.torch.cuda, "is_bf16_supported", lambda: False)
    assert resolvers.fast_precision("gpu") == "16-mixed"
    assert resolvers.fast_precision("gpu", "32-true") == "32-true"


@pytest.mark.parametrize("native", [False, True])
def test_the_recipes_fine_tune_in_bfloat16_only_where_it_is_native(
    monkeypatch, tmp_path: Path, native: bool
) -> None:
    from neurocuda.training import resolvers

    monkeypatch.setattr(resolvers, "_cpu_has_bf16", lambda: native)
    for experiment in ("cifarnet_qcfs_cpu", "resnet20_qcfs_cpu"):
        cfg = compose_train_config([f"experiment={experiment}"], tmp_path)
        assert cfg.finetune.precision == ("bf16-mixed" if native else "32-true")
        assert cfg.trainer.precision == cfg.finetune.precision


def test_only_the_cifarnet_recipe_fine_tunes_with_batch_norms(tmp_path: Path) -> None:
    """Measured to help CifarNet (two runs above all four without) and to cost the ResNet-20 its
    T=1 (docs/results.md, fortieth and forty-first sessions)."""
    cifarnet = compose_train_config(["experiment=cifarnet_qcfs_cpu"], tmp_path).finetune
    resnet = compose_train_config(["experiment=resnet20_qcfs_cpu"], tmp_path).finetune
    assert cifarnet.batch_norm is True and cifarnet.batch_norm_epochs is None
    assert resnet.batch_norm is False


def test_default_trainer_uses_what_the_machine_has(tmp_path: Path) -> None:
    cfg = compose_train_config([], tmp_path)
    assert cfg.trainer.accelerator == "auto"
    assert compose_train_config(["trainer=cpu"], tmp_path).trainer.accelerator == "cpu"


def test_the_cpu_recipes_keep_their_last_epoch(tmp_path: Path) -> None:
    """Their one-cycle schedules anneal to zero: the last epoch is the trained net (docs/results.md,
    twenty-fourth and twenty-fifth sessions), the QCFS twins' too; the default keeps the best."""
    for recipe in ("cifarnet_cpu", "cifarnet_qcfs_cpu", "resnet20_cpu", "resnet20_qcfs_cpu"):
        cfg = compose_train_config([f"experiment={recipe}"], tmp_path)
        assert cfg.callbacks.model_checkpoint.monitor is None, recipe
        finetune = cfg.get("finetune")
        assert finetune is None or finetune.callbacks.model_checkpoint.monitor is None, recipe
    assert compose_train_config([], tmp_path).callbacks.model_checkpoint.monitor == "val/acc"
