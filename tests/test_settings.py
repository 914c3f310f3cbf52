"""The data, deploy and trainer settings fail before any work with the key, value and range."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from neurocuda.data import CIFAR10DataModule
from neurocuda.training import settings
from neurocuda.training.compose import compose_train_config
from neurocuda.training.settings import DATA_RULES, SettingsError, validate_run_settings
from tests.conftest import ROOT
from train import train

BAD = [
    ("data.train_subset=-1", r"data\.train_subset=-1 must be an integer >= 1 or null"),
    ("data.batch_size=0", r"data\.batch_size=0 must be an integer >= 1\."),
    ("data.batch_size=1.5", r"data\.batch_size=1\.5 must be an integer >= 1\."),
    ("data.eval_batch_size=0", r"data\.eval_batch_size=0 must be an integer >= 1 or null"),
    ("data.val_size=-1", r"data\.val_size=-1 must be an integer in \[0, 49999\]"),
    ("data.val_size=50000", r"data\.val_size=50000 must be an integer in \[0, 49999\]"),
    ("data.num_workers=-2", r"data\.num_workers=-2 must be an integer >= 0"),
    ("data.cutout=33", r"data\.cutout=33 must be an integer in \[0, 32\]"),
    ("data.source=s3", r"data\.source='s3' must be auto or jpeg or torchvision"),
    ("+data.std=[0.2,0,0.2]", r"data\.std=\[0\.2, 0, 0\.2\] must be a list of 3 finite positive"),
    ("seed=null", r"data\.seed=None must be an integer >= 0"),
    ("data.shuffle_seed=-3", r"data\.shuffle_seed=-3 must be an integer >= 0 or null"),
    (
        "+data.batchsize=64",
        r"data\.batchsize is not a setting of the data group; known: .*batch_size",
    ),
    ("trainer.max_epochs=0", r"trainer\.max_epochs=0 must be an integer >= 1"),
    ("trainer.max_epochs=-1", r"trainer\.max_epochs=-1 must be an integer >= 1"),
    ("+trainer.max_epoch=3", r"trainer\.max_epoch is not a setting of the trainer group"),
]
BAD_DEPLOY = [
    ("deploy.timesteps=0", r"deploy\.timesteps=0 must be an integer in \[1, 4096\]"),
    ("deploy.max_images=0", r"deploy\.max_images=0 must be an integer >= 1 or null"),
    ("deploy.calibration_batches=0", r"deploy\.calibration_batches=0 must be an integer >= 1"),
    ("+deploy.backend.speed=9", r"deploy\.backend\.speed is not a setting of the deploy\.backend"),
    ("+deploy.max_image=5", r"deploy\.max_image is not a setting of the deploy group"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_setting_names_key_value_and_range(override: str, message: str, tmp_path) -> None:
    with pytest.raises(SettingsError, match=message):
        validate_run_settings(compose_train_config([override], tmp_path))


@pytest.mark.parametrize(("override", "message"), BAD_DEPLOY, ids=[b[0] for b in BAD_DEPLOY])
@pytest.mark.parametrize("target", ["cpu", "loihi2"])
def test_bad_deploy_setting_fails(target: str, override: str, message: str, tmp_path) -> None:
    with pytest.raises(SettingsError, match=message):
        validate_run_settings(compose_train_config([f"deploy={target}", override], tmp_path))


POISSON = [
    (
        ["+data.mean=[0.5,0.5,0.5]"],
        r"conversion\.encoding=poisson .* data\.mean=\[0\.5, 0\.5, 0\.5\]",
    ),
    (["+data.std=[0.25,0.25,0.25]"], r"data\.std=\[0\.25, 0\.25, 0\.25\] \(CIFAR-10's"),
    (["deploy=loihi2"], r"deploy runs the deployed SNN on the image itself"),
]


@pytest.mark.parametrize(("overrides", "message"), POISSON, ids=[p[0][0] for p in POISSON])
def test_poisson_runs_take_what_the_encoding_and_deployments_assume(
    overrides: list[str], message: str, tmp_path
) -> None:
    with pytest.raises(SettingsError, match=message):
        validate_run_settings(
            compose_train_config(["conversion.encoding=poisson", *overrides], tmp_path)
        )
    validate_run_settings(compose_train_config(overrides, tmp_path))  # direct encoding: fine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimized_metric=snn/acc_T4", "conversion.timesteps=[8,16]"],
            r"optimized_metric=snn/acc_T4 is logged at the T's of conversion\.timesteps "
            r"\(\[8, 16\]\); add T=4",
        ),
        (
            ["optimized_metric=test/snn_gap_T8", "~conversion"],
            r"\(\[\]: the conversion group is off\)",
        ),
        (
            ["optimized_metric=val/accuracy"],
            r"val/accuracy is not logged; the val/ metrics are val/acc, val/loss, val/acc_best",
        ),
        (["optimized_metric=accuracy"], r"named <family>/<name> with family one of train, val"),
        (["optimized_metric=test/acc", "test=false"], r"logged by the test; set test=true"),
    ],
)
def test_an_optimized_metric_the_run_does_not_log_fails_at_start(
    overrides, message, tmp_path
) -> None:
    """Each trial trained in full, then raised KeyError for the metric it never logged."""
    with pytest.raises(SettingsError, match=message):
        validate_run_settings(compose_train_config(overrides, tmp_path))
    for fine in ("snn/acc_T4", "val/acc", "test/snn_gap_T4", "val/snn_acc_T4", "nir/max_abs_diff"):
        validate_run_settings(compose_train_config([f"optimized_metric={fine}"], tmp_path))


def test_a_gpu_trainer_without_a_gpu_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(settings, "cuda_available", lambda: False)
    with pytest.raises(
        SettingsError, match=r"trainer\.accelerator=gpu but PyTorch sees no CUDA GPU .*trainer=cpu"
    ):
        validate_run_settings(compose_train_config(["trainer=gpu"], tmp_path))
    validate_run_settings(compose_train_config([], tmp_path))  # auto: fine without one


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "configs/experiment").glob("*")))
@pytest.mark.parametrize("deploy", ["cpu", "loihi2"])
def test_shipped_configs_are_valid(option: str, deploy: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(settings, "cuda_available", lambda: True)  # the GPU recipes' machine
    validate_run_settings(
        compose_train_config([f"experiment={option}", f"deploy={deploy}"], tmp_path)
    )


def test_data_rules_are_the_datamodule_arguments() -> None:
    arguments = set(inspect.signature(CIFAR10DataModule).parameters)
    assert set(DATA_RULES) == arguments


def test_train_fails_before_decoding_any_data(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("deploy=cpu", "deploy.max_images=0")
    with pytest.raises(SettingsError, match=r"deploy\.max_images=0"):
        train(cfg)
    assert not (tmp_path / "cache").exists()  # the archive was never decoded
    assert not (tmp_path / "run" / "checkpoints").exists()
