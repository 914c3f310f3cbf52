"""A train.py run SIGKILLed mid-epoch, between an epoch's two checkpoint writes and during an
epoch's end, in its ANN fit or in its SNN fine-tuning stage, resumed with only its directory, ends
exactly like the uninterrupted run: weights, metrics file, checkpoints and .nir files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import torch

from neurocuda.training.checkpoints import newest_checkpoint
from tests.conftest import ROOT, tiny_run_overrides

# Two epochs of 3 batches: killed before global step 4 (mid-epoch 1), resumed, killed between epoch
# 1's best checkpoint and its last.ckpt, resumed, killed in epoch 1's end (after its checkpoints,
# before its SNN conversion), resumed again.
KILLS = "[step:4,save:1:2,epoch_end:1]"


def _train(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # generous: a loaded 2-core machine takes minutes per run
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _files(run: Path) -> list[str]:
    """The run's outputs, without logs and the saved configs (which name the run)."""
    skip = {".hydra", "train.log", "hparams.yaml"}
    return sorted(
        str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not skip & set(p.parts)
    )


def _arrays(node: object, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array of a NIR graph by its path (nested graphs and metadata included)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out |= _arrays(value, f"{prefix}/{key}")
        return out
    return {prefix: np.asarray(node)}


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_archive: Path, tmp_path: Path) -> None:
    base = [
        *tiny_run_overrides(tiny_archive, tmp_path),
        "trainer.max_epochs=2",
        "conversion.timesteps=[1,2]",
        "conversion.calibration.batches=1",
        "conversion.eval_subset=16",
        "conversion.callbacks.nir_round_trip.num_images=4",
    ]
    reference, run = tmp_path / "reference", tmp_path / "killed"
    done = _train(*base, f"hydra.run.dir={reference}")
    assert done.returncode == 0, done.stderr[-3000:]

    kill = ["+callbacks.kill._target_=tests.helpers.KillOnce", f"+callbacks.kill.at={KILLS}",
            f"+callbacks.kill.marker={tmp_path / 'kills'}"]  # fmt: skip
    first = _train(*base, *kill, f"hydra.run.dir={run}")
    assert first.returncode == -9, first.stderr[-3000:]  # SIGKILL
    saved_config = (run / ".hydra" / "config.yaml").read_text()
    for expected_kill in (-9, -9):  # killed again in epoch 1's saves and end
        resumed = _train(f"hydra.run.dir={run}", "resume=true")
        assert resumed.returncode == expected_kill, resumed.stderr[-3000:]
        assert (run / ".hydra" / "config.yaml").read_text() == saved_config
    assert (tmp_path / "kills").read_text().split() == ["step:4", "save:1:2", "epoch_end:1"]
    # moved before the last resume: it tested the old folder's checkpoint (gone: an error, or a
    # copy's: another run's file) and wrote a stray snn_epoch1.nir
    run = run.rename(tmp_path / "moved")
    resumed = _train(f"hydra.run.dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    _assert_same_run(run, reference, "checkpoints/last.ckpt")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    with (run / "csv/version_0/metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    for key in ("train/acc", "snn/acc_T2", "nir/max_abs_diff", "val/acc_best"):  # every epoch's
        assert [r["epoch"] for r in rows if r[key]] == ["0", "1"], key
    assert [r["test/acc"] for r in rows if r["test/acc"]], "no test row"


def _assert_same_run(run: Path, reference: Path, checkpoint: str) -> None:
    """The same files, the same weights in ``checkpoint`` (every tensor the file holds), the same
    metrics file, the same arrays in every .nir file and the same summary (its NIR checks too)."""
    assert _files(run) == _files(reference)  # no stray .nir, one metrics file
    ours, theirs = (json.loads((d / "summary.json").read_text().replace(str(d), "RUN"))
                    for d in (run, reference))  # fmt: skip
    assert ours == theirs and ours["nir"]["passed"]
    ours = torch.load(run / checkpoint, weights_only=True)
    theirs = torch.load(reference / checkpoint, weights_only=True)
    assert ours["global_step"] == theirs["global_step"]
    for part in ("state_dict", "unfolded_state_dict"):
        assert ours.get(part, {}).keys() == theirs.get(part, {}).keys(), part
        for key, value in theirs.get(part, {}).items():
            assert torch.equal(ours[part][key], value), f"{part}: {key}"
    metrics = "csv/version_0/metrics.csv"
    with (run / metrics).open() as a, (reference / metrics).open() as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b))
    nir_files = sorted(p.relative_to(reference) for p in reference.rglob("*.nir"))
    assert nir_files, "the run exported no .nir files"
    for name in nir_files:
        ours_nir = _arrays(nir.read(run / name).to_dict())
        theirs_nir = _arrays(nir.read(reference / name).to_dict())
        assert ours_nir.keys() == theirs_nir.keys(), name
        for key, value in theirs_nir.items():
            assert np.array_equal(ours_nir[key], value), f"{name}{key}"


def test_killed_fine_tuning_resumes_to_the_uninterrupted_result(
    tiny_archive: Path, tmp_path: Path
) -> None:
    """Fine-tuning (2 epochs of 3 batches, batch norms on) after a finished ANN fit: killed in
    its epoch 0's end, before its global step 4 and between epoch 1's two checkpoints."""
    base = [
        *tiny_run_overrides(tiny_archive, tmp_path),
        "conversion.timesteps=[1,2]",
        "conversion.calibration.batches=1",
        "conversion.eval_subset=16",
        "conversion.callbacks.nir_round_trip.num_images=4",
        "finetune=snn",
        "finetune.timesteps=2",
        "finetune.epochs=2",
        "finetune.train_batches=3",
        "finetune.batch_norm=true",
        "finetune.callbacks.model_checkpoint.monitor=null",  # two saves every epoch
        "finetune.callbacks.nir_round_trip.num_images=4",
    ]
    reference, run = tmp_path / "reference", tmp_path / "killed"
    done = _train(*base, f"hydra.run.dir={reference}")
    assert done.returncode == 0, done.stderr[-3000:]

    points = ["epoch_end:0", "step:4", "save:1:2"]
    kill = ["+finetune.callbacks.kill._target_=tests.helpers.KillOnce",
            f"+finetune.callbacks.kill.at=[{','.join(points)}]",
            f"+finetune.callbacks.kill.marker={tmp_path / 'kills'}"]  # fmt: skip
    first = _train(*base, *kill, f"hydra.run.dir={run}")
    assert first.returncode == -9, first.stderr[-3000:]
    for expected in (-9, -9, 0):
        resumed = _train(f"hydra.run.dir={run}", "resume=true")
        assert resumed.returncode == expected, resumed.stderr[-3000:]
        assert "The ANN fit had finished" in resumed.stdout + resumed.stderr
    assert (tmp_path / "kills").read_text().split() == points
    _assert_same_run(run, reference, "checkpoints/finetune/last.ckpt")
    _assert_same_run(run, reference, "checkpoints/last.ckpt")


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path: Path) -> None:
    for name, step in (("epoch_000.ckpt", 3), ("epoch_001.ckpt", 6), ("last.ckpt", 3)):
        torch.save({"global_step": step, "epoch": step // 3 - 1}, tmp_path / name)
    # killed between epoch_001.ckpt and last.ckpt: last.ckpt is one epoch behind
    assert newest_checkpoint(tmp_path) == tmp_path / "epoch_001.ckpt"
    (tmp_path / "epoch_002.ckpt").write_bytes((tmp_path / "epoch_001.ckpt").read_bytes()[:50])
    assert newest_checkpoint(tmp_path) == tmp_path / "epoch_001.ckpt"  # cut short: skipped
    torch.save({"global_step": 6, "epoch": 1}, tmp_path / "last.ckpt")
    assert newest_checkpoint(tmp_path) == tmp_path / "last.ckpt"  # same step: last.ckpt
    assert newest_checkpoint(tmp_path / "none") is None
