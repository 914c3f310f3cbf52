"""The NIRRoundTrip callback in a real (tiny) fit: a .nir beside every converted checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.checkpoint import CheckpointWithNIR
from callbacks.lookup import find_callback
from callbacks.nir_round_trip import NIRRoundTrip
from callbacks.snn_conversion import SNNConversion, saved_this_step
from neurocuda.conversion import ConversionConfig
from neurocuda.nir import Executor, load
from neurocuda.training import ClassifierModule
from tests.conftest import ROOT
from train import train


class Metrics(L.Callback):
    """Collects the logged NIR metrics of every epoch."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []
        self.nir_paths: list[Path] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.nir_paths = find_callback(trainer, SNNConversion).latest.nir_paths
        nir_metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("nir/")
        }
        self.seen.append(nir_metrics)


def fit(datamodule, tmp_path: Path, round_trip: NIRRoundTrip, epochs: int = 2) -> Metrics:
    metrics = Metrics()
    trainer = L.Trainer(
        max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[
            CheckpointWithNIR(dirpath=tmp_path / "ckpt", save_last=True),
            SNNConversion(
                ConversionConfig(timesteps=[2, 3], calibration_batches=1), eval_subset=8
            ),
            round_trip,
            metrics,
        ],
    )  # fmt: skip
    module = ClassifierModule(arch_kwargs={"widths": [4, 8, 8, 8]}, scheduler={"name": "none"})
    trainer.fit(module, datamodule=datamodule)
    return metrics


def test_every_checkpoint_gets_an_exact_nir_file(
    tiny_datamodule, tiny_archive, tmp_path: Path
) -> None:
    round_trip = NIRRoundTrip(num_images=4)
    metrics = fit(tiny_datamodule, tmp_path, round_trip)
    assert [m["nir/max_abs_diff"] for m in metrics.seen] == [0.0, 0.0]
    assert [m["nir/divergent_images"] for m in metrics.seen] == [0.0, 0.0]
    checkpoints = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert {p.name for p in checkpoints} == {"epoch=1-step=4.ckpt", "last.ckpt"}
    assert all(p.with_suffix(".nir").is_file() for p in checkpoints)
    # epoch 0's checkpoint was replaced by epoch 1's: its .nir went with it
    assert {p.stem for p in (tmp_path / "ckpt").glob("*.nir")} == {p.stem for p in checkpoints}
    path = metrics.nir_paths[0]  # handed over on the ConversionResult
    assert path in {p.with_suffix(".nir") for p in checkpoints}
    graph = load(path)
    assert graph.metadata["timesteps"] == "2,3" and graph.metadata["epoch"] == 1
    assert Executor(graph)(torch.zeros(2, 1, 3, 32, 32)).shape == (2, 1, 10)
    # re-converting the checkpoint reproduces the file exactly, whatever batch size the test
    # images run with: calibration follows the checkpoint's own data settings
    result = subprocess.run(
        [sys.executable, "scripts/verify_nir.py", str(path), "data.test_subset=8",  # honoured
         "--archive", str(tiny_archive), "--timesteps", "1", "3", "--batch-size", "3",
         "--checkpoint", str(path.with_suffix(".ckpt"))],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "NIR acc" in result.stdout and "8 test images" in result.stdout
    assert "round trip exact" in result.stdout


def test_mismatch_fails_the_run(tiny_datamodule, tmp_path: Path, monkeypatch) -> None:
    def off_by_one_ulp(self, x):
        out = original(self, x)
        return torch.nextafter(out, out + 1)

    original = Executor.forward
    monkeypatch.setattr(Executor, "forward", off_by_one_ulp)
    with pytest.raises(RuntimeError, match=r"NIR round trip .* is not exact"):
        fit(tiny_datamodule, tmp_path, NIRRoundTrip(num_images=2), epochs=1)
    with pytest.warns(UserWarning, match="is not exact"):
        fit(
            tiny_datamodule,
            tmp_path / "warn",
            NIRRoundTrip(num_images=2, on_mismatch="warn"),
            epochs=1,
        )


def test_needs_the_conversion_callback(tiny_datamodule, tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[NIRRoundTrip()],
        default_root_dir=tmp_path,
    )  # fmt: skip
    module = ClassifierModule(arch_kwargs={"widths": [4, 8, 8, 8]}, scheduler={"name": "none"})
    with pytest.raises(RuntimeError, match="needs the SNNConversion callback"):
        trainer.fit(module, datamodule=tiny_datamodule)


def test_a_checkpoint_of_another_run_is_not_taken_for_this_runs(tmp_path: Path) -> None:
    """``ckpt_path=`` another run's checkpoint: Lightning restores that run's ``best_model_path``
    into this run's callback, and the restored epoch's conversion was written over its .nir."""
    other, mine = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    for folder in (other, mine):
        folder.mkdir(parents=True)
        torch.save({"global_step": 6}, folder / "epoch_001.ckpt")
    cb = ModelCheckpoint(dirpath=mine)
    trainer = SimpleNamespace(checkpoint_callbacks=[cb], global_step=6, ckpt_path="given.ckpt")
    cb.best_model_path = str(other / "epoch_001.ckpt")  # restored from the other run's file
    assert saved_this_step(trainer) == []
    cb.best_model_path = str(mine / "epoch_001.ckpt")  # a resume of this run: its own file
    assert saved_this_step(trainer) == [cb.best_model_path]


def test_every_file_saved_at_a_step_gets_its_nir_with_save_top_k_above_one(train_cfg, tmp_path):
    """With save_top_k=3 the best kept file (best_model_path) was taken as this step's: this
    epoch's SNN went into an older checkpoint's .nir and the new checkpoint had none."""
    train(train_cfg("trainer.max_epochs=3", "callbacks.model_checkpoint.save_top_k=3",
                    "conversion.timesteps=[2]", "conversion.eval_subset=8",
                    "conversion.calibration.batches=1", "test=false"))  # fmt: skip
    folder = tmp_path / "run" / "checkpoints"
    for ckpt in folder.glob("*.ckpt"):
        metadata = load(ckpt.with_suffix(".nir")).metadata  # each checkpoint has its own file
        assert ckpt.name in str(metadata["checkpoint"]).split(","), ckpt.name


def test_a_run_that_neither_fits_nor_tests_leaves_a_given_nir_alone(train_cfg, tmp_path):
    """train=false test=false with ckpt_path=X.ckpt beside X.nir: the summary re-executed X.nir
    on a fixed validation batch that no datamodule could give (AttributeError)."""
    train(train_cfg("conversion.timesteps=[2]", "conversion.eval_subset=8",
                    "conversion.calibration.batches=1", "test=false"))  # fmt: skip
    given = tmp_path / "given.ckpt"
    folder = tmp_path / "run" / "checkpoints"
    (folder / "last.ckpt").rename(given)
    (folder / "last.nir").rename(given.with_suffix(".nir"))
    train(train_cfg("train=false", "test=false", f"ckpt_path={given}"))


def test_the_kept_checkpoint_gets_its_verified_nir_at_the_end_of_the_fit(
    relu_checkpoint: Path, tmp_path: Path
) -> None:
    """With conversion.every_n_epochs > 1 the best checkpoint could come from an epoch never
    converted: it had no .nir, and the deployment and summary took the last conversion's file
    (another network) while the run's SNN test converted the kept checkpoint."""
    from neurocuda.data.from_checkpoint import datamodule_from_checkpoint

    settings = ConversionConfig(timesteps=(1, 2), correction_timesteps=0)
    datamodule = datamodule_from_checkpoint(relu_checkpoint)
    datamodule.setup("fit")
    trainer = SimpleNamespace(
        is_global_zero=True,
        callbacks=[SNNConversion(settings)],
        checkpoint_callback=SimpleNamespace(best_model_path=str(relu_checkpoint)),
        datamodule=datamodule,
        val_dataloaders=None,
        loggers=[],
    )
    round_trip = NIRRoundTrip(num_images=4)
    round_trip.on_fit_end(trainer, SimpleNamespace(device=torch.device("cpu")))
    nir_file = relu_checkpoint.with_suffix(".nir")
    report = round_trip.checks[str(nir_file)]
    assert nir_file.is_file() and report.worst_diff == 0.0 and report.total_divergent == 0
    assert load(nir_file).metadata["checkpoint"] == relu_checkpoint.name
    written = nir_file.stat().st_mtime_ns
    round_trip.on_fit_end(trainer, SimpleNamespace(device=torch.device("cpu")))  # has one: kept
    assert nir_file.stat().st_mtime_ns == written
