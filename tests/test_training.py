"""train.py end to end on tiny data: fit + test, loggers, resume, DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurocuda.reporting.wandb_offline import last_values, read_offline_run
from neurocuda.training.compose import compose_train_config
from tests.conftest import ROOT, tiny_run_overrides
from train import train


@pytest.mark.parametrize("stray", [[], ["+conversion.eval_subset=10"]])
def test_fit_and_test_write_checkpoints_and_metrics(train_cfg, tmp_path: Path, stray) -> None:
    # stray: an experiment's conversion override (resnet20_cpu) outliving ~conversion
    metrics = train(train_cfg("~conversion", *stray))
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert {"val/acc", "test/acc", "train/loss_epoch"} <= set(metrics)
    csv_text = next(run.glob("csv/version_*/metrics.csv")).read_text()
    assert "val/acc" in csv_text and "test/acc" in csv_text


def test_a_run_without_a_logger(train_cfg, tmp_path: Path) -> None:
    """logger=none also drops the callbacks that need a logger (the learning-rate monitor)."""
    metrics = train(train_cfg("~conversion", "logger=none"))
    assert "test/acc" in metrics
    assert not (tmp_path / "run" / "csv").exists()


def test_callbacks_none_writes_no_checkpoint(tiny_archive: Path, tmp_path: Path) -> None:
    """Lightning added its own ModelCheckpoint, writing files under csv/ that no resume finds."""
    tiny = [o for o in tiny_run_overrides(tiny_archive, tmp_path) if "callbacks." not in o]
    metrics = train(
        compose_train_config([*tiny, "~conversion", "callbacks=none"], tmp_path / "run")
    )
    assert "test/acc" in metrics
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_an_unmonitored_checkpoint_tests_the_last_epoch(train_cfg, tmp_path: Path) -> None:
    """``callbacks.model_checkpoint.monitor=null`` (the ResNet-20 recipe) keeps, tests and
    converts the last epoch, not the epoch the validation split liked best."""
    train(train_cfg("trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=null"))
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    assert kept == ["epoch_002.ckpt"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert Path(summary["checkpoint"]).name == "epoch_002.ckpt"
    assert summary["snn_source"] == "the last epoch's ANN checkpoint, converted"


def test_wandb_offline_run_holds_the_metrics(train_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(train_cfg("~conversion", "logger=wandb"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    logged = last_values(run["history"])
    assert {"val/acc", "test/acc", "train/loss_epoch"} <= set(logged)
    assert 0.0 <= logged["test/acc"] <= 1.0
    assert run["config"]["model"]["arch"] == "cifarnet"


def _run_train(overrides: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_killed_run_resumes_and_finishes_all_epochs(tiny_archive: Path, tmp_path: Path) -> None:
    """Also in W&B: the resumed process continues the killed one's run (the same run id)."""
    run = tmp_path / "run"
    base = [
        *tiny_run_overrides(tiny_archive, tmp_path),
        "~conversion",
        "logger=wandb",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
    ]
    offline = {"WANDB_MODE": "offline"}
    killed = _run_train(
        [*base, "+callbacks.kill._target_=tests.helpers.ExitAfterEpoch", "+callbacks.kill.epoch=0"],
        offline,
    )
    assert killed.returncode == 17, killed.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    resumed = _run_train([*base, "resume=true"], offline)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["epoch"] == 2  # epoch 0 before the kill; epochs 1 and 2 after resuming
    assert final["global_step"] == 3 * 3  # 3 epochs of 3 batches, none repeated
    parts = sorted((run / "wandb").glob("offline-run-*"))  # one per process, synced in order
    assert len(parts) == 2 and len({p.name.rsplit("-", 1)[1] for p in parts}) == 1, parts
    # offline W&B writes its log in 32 KiB blocks: this tiny killed run's records died in its buffer
    resumed_part = read_offline_run(parts[1])["history"]
    assert [r["epoch"] for r in resumed_part if "val/acc" in r] == [1, 2]


def test_a_run_killed_after_its_last_epoch_resumes_with_its_metrics(
    tiny_archive: Path, tmp_path: Path
) -> None:
    """The restored fit validates nothing again: val/acc was missing and the optimized metric
    raised KeyError (a sweep's trial failed after the kill)."""
    run = tmp_path / "run"
    base = [*tiny_run_overrides(tiny_archive, tmp_path), "~conversion", f"hydra.run.dir={run}",
            "optimized_metric=val/acc"]  # fmt: skip
    kill = ["+callbacks.kill._target_=tests.helpers.ExitAfterEpoch", "+callbacks.kill.epoch=0"]
    assert _run_train([*base, *kill]).returncode == 17
    resumed = _run_train([*base, "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_resume_without_checkpoint_is_a_clear_error(tiny_archive: Path, tmp_path: Path) -> None:
    result = _run_train(
        [
            *tiny_run_overrides(tiny_archive, tmp_path),
            "~conversion",
            f"hydra.run.dir={tmp_path / 'fresh'}",
            "resume=true",
        ]
    )
    assert result.returncode != 0
    assert "resume=true but" in result.stderr


def test_ddp_on_two_cpu_processes_converts_and_deploys_once(
    tiny_archive: Path, tmp_path: Path
) -> None:
    """Both processes converted (each on its half of the validation images, rank 0's logged),
    exported, deployed and wrote the same files; with W&B rank 1 crashed naming an artifact after
    its dummy run."""
    run = tmp_path / "ddp"
    result = _run_train(
        [
            *tiny_run_overrides(tiny_archive, tmp_path),
            "trainer=ddp_cpu",
            f"hydra.run.dir={run}",
            "test=false",
            "logger=wandb",
            "conversion.timesteps=[1,2]",
            "conversion.correction.timesteps=0",
            "conversion.callbacks.nir_round_trip.num_images=4",
            "deploy=cpu",
            "deploy.max_images=16",
            "deploy.timesteps=2",
            "deploy.calibration_batches=1",
        ],
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert (run / "checkpoints" / "last.ckpt").is_file()
    log = (run / "train.log").read_text()
    assert log.count("SNN accuracy on 40 val images") == 1, log  # all 40, once
    assert log.count("NIR round trip") == 1 and log.count("Deploying") == 1
    assert (run / "summary.json").is_file() and (run / "deploy" / "deploy_cpu.json").is_file()


def test_the_training_benchmark_refuses_conversion_settings_before_training(tmp_path) -> None:
    command = [sys.executable, "scripts/benchmark_training.py", "--run-dir", str(tmp_path / "r"),
               "--", "+model.activation_kwargs.shift=0", "conversion.v_init=0"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "conversion.v_init=0: this benchmark times" in done.stderr
    assert "scripts/convert.py" in done.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [("", r"no task_name, train, test, data, model, trainer, callbacks, paths"),
     ("task_name: train\ndata: {batch_size: 32\n", r"while parsing a flow mapping"),
     ("task_name: x\ntrain: 1\ntest: 1\ndata: {}\nmodel: {}\ntrainer: {}", r"no callbacks, paths")],
    ids=["empty", "not YAML", "cut short"],
)  # fmt: skip
def test_resume_with_a_damaged_saved_config_names_the_file(tmp_path: Path, content, why) -> None:
    """Hydra writes .hydra/config.yaml without fsync: an empty one failed with "Key 'data' is not
    in struct" (a traceback), a cut one with an interpolation error naming no file."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(content)
    result = _run_train([f"hydra.run.dir={run}", "resume=true"])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(rf"{run}/\.hydra/config\.yaml is damaged \({why}", result.stderr)
    assert "ckpt_path=RUN_DIR/checkpoints/last.ckpt" in result.stderr
