"""The SNNConversion callback in a real (tiny) fit, configured like train.py configures it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.snn_conversion import SNNConversion
from neurocuda.conversion import ConversionConfig, ConversionResult
from neurocuda.snn import SpikingModel
from neurocuda.training import ClassifierModule
from tests.conftest import ROOT
from train import train


def test_train_py_logs_snn_metrics_from_the_conversion_group(train_cfg) -> None:
    cfg = train_cfg(
        "conversion.timesteps=[1,2,4]",
        "conversion.calibration.batches=2",
        "conversion.eval_subset=16",
        "test=false",
    )
    metrics = train(cfg)
    assert {"snn/acc_T1", "snn/acc_T2", "snn/acc_T4", "snn/gap_T4", "snn/synops_per_image"} <= set(
        metrics
    )
    assert any(k.startswith("snn/spike_rate/") for k in metrics)
    assert 0.0 <= metrics["snn/acc_T4"] <= 1.0
    assert metrics["snn/gap_T4"] == pytest.approx(metrics["snn/ann_acc"] - metrics["snn/acc_T4"])


def test_callback_keeps_the_latest_result_with_its_checkpoint(
    tiny_datamodule, tmp_path: Path
) -> None:
    settings = ConversionConfig(timesteps=[1, 2], calibration_batches=1)
    callback = SNNConversion(settings, every_n_epochs=5, eval_subset=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint, callback],
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    module = ClassifierModule(arch_kwargs={"widths": [4, 8, 8, 8]}, scheduler={"name": "none"})
    trainer.fit(module, datamodule=tiny_datamodule)
    result = callback.latest
    assert isinstance(result, ConversionResult) and isinstance(result.snn, SpikingModel)
    assert result.epoch == 1  # only the last epoch is due with every_n_epochs=5
    assert result.checkpoint_paths and all(Path(p).is_file() for p in result.checkpoint_paths)
    # the checkpoints are this epoch's: they were saved before the conversion ran
    for path in result.checkpoint_paths:
        assert torch.load(path, weights_only=False)["epoch"] == result.epoch
    assert set(result.accuracy) == {1, 2} and 0.0 <= result.ann_accuracy <= 1.0
    assert module.net.training  # the ANN is untouched and still training-mode


def test_convert_script_writes_table_and_plot(tiny_datamodule, tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    module = ClassifierModule(arch_kwargs={"widths": [4, 8, 8, 8]}, scheduler={"name": "none"})
    trainer.fit(module, datamodule=tiny_datamodule)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "scripts/convert.py", str(ckpt), "conversion.timesteps=[1,3]",
         "conversion.calibration.batches=1", "--split", "val", "--out", str(out),
         "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SNN acc" in result.stdout
    record = json.loads((out / "model.ckpt.snn.json").read_text())
    assert set(record["snn_accuracy"]) == {"1", "3"} and record["images"] == 40
    assert record["conversion"]["calibration"]["batches"] == 1
    assert (out / "model.ckpt.snn.png").stat().st_size > 1000
    assert "| 3 |" in (out / "model.ckpt.snn.md").read_text()
