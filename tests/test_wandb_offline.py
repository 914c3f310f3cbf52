"""The offline W&B log reader on a killed process's log: whatever was written before the kill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from neurocuda.reporting.wandb_offline import read_offline_run
from neurocuda.training.compose import compose_train_config
from neurocuda.training.instantiate import instantiate_loggers
from tests.conftest import ROOT, tiny_run_overrides

LOG_ROWS = """
import wandb
run = wandb.init(project="p", dir={dir!r}, mode="offline", config={{"arch": "cifarnet"}})
for step in range(400):
    run.log({{"step_value": step, "padding": "x" * 100}}, step=step)
run.finish()
"""


def test_a_log_cut_mid_record_reads_as_its_complete_records(tmp_path: Path) -> None:
    code = LOG_ROWS.format(dir=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "WANDB_SILENT": "true"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = tmp_path.glob("wandb/offline-run-*")
    (log,) = run.glob("run-*.wandb")
    full = read_offline_run(run)
    assert [r["step_value"] for r in full["history"]] == list(range(400))
    data = log.read_bytes()
    assert len(data) > 40_000  # more than one 32 KiB block
    for cut in (len(data) // 3 + 11, 32 * 1024 + 5, 2 * len(data) // 3 + 7):
        log.write_bytes(data[:cut])  # a process killed while writing
        rows = [r["step_value"] for r in read_offline_run(run)["history"]]
        assert 0 < len(rows) < 400 and rows == list(range(len(rows))), cut


def test_a_failed_run_is_recorded_failed_in_wandb(tiny_archive: Path, tmp_path: Path) -> None:
    """finish() without an exit code recorded every run as a success (exit code 0)."""
    run = tmp_path / "run"
    overrides = ["logger=wandb", f"hydra.run.dir={run}", f"ckpt_path={tmp_path / 'none.ckpt'}"]
    command = [sys.executable, "train.py", *tiny_run_overrides(tiny_archive, tmp_path), *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1 and "none.ckpt does not exist" in done.stderr
    (offline,) = run.glob("wandb/offline-run-*")
    assert read_offline_run(offline)["exit_code"] == 1


def test_wandb_mode_disabled_turns_the_wandb_logger_off(tmp_path: Path, monkeypatch) -> None:
    """Lightning's offline=true set WANDB_MODE=dryrun over it: an offline run was written."""
    cfg = compose_train_config(["logger=wandb"], tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert instantiate_loggers(cfg) == []
    GlobalHydra.instance().clear()
