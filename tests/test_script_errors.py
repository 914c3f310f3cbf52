"""The command-line scripts refuse bad input in one line, before any data loads or work starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

GONE = r"model\.ckpt\.gone does not exist"
CASES = [
    # a negative count once evaluated 9,995 of the 10,000 test images (order[:-5])
    (["scripts/convert.py", "{ckpt}", "data.test_subset=-5"], 1, r"data\.test_subset=-5 must be"),
    (["scripts/layer_errors.py", "{ckpt}", "data.val_subset=0"], 1, r"data\.val_subset=0 must be"),
    (["scripts/verify_nir.py", "{ckpt}", "--num-images", "-5"], 2, r"'-5' is not an integer >= 0"),
    (["scripts/layer_errors.py", "{ckpt}", "--timesteps", "0"], 2, r"'0' is not an integer >= 1"),
    # the whole deployment ran before "file exists" named the report inside the file
    (["scripts/deploy.py", "{ckpt}", "--out", "{ckpt}"], 2, r"--out .*model\.ckpt is a file"),
    # silently replaced the training run's checked epoch_000.nir by a zero-reset graph
    (["scripts/convert.py", "{ckpt}", "--nir"], 2, r"--nir would replace .*model\.nir, the "),
    # these printed a traceback, the last two after long work (importer venvs, speed runs)
    (["scripts/benchmark_conversion.py", "--relu-ckpt", "{ckpt}.gone"], 1, GONE),
    (["scripts/interop_matrix.py", "--checkpoints", "{ckpt}.gone"], 1, GONE),
    (["scripts/benchmark_nir.py", "--checkpoint", "{ckpt}.gone"], 1, GONE),
    (
        ["scripts/summarize.py", "{ckpt}"],
        1,
        r"not valid YAML \(.*\); is the run directory intact\?",
    ),
    (
        ["scripts/summarize.py", "{ckpt}.gone", "--out", "{ckpt}"],
        2,
        r"--out .*model\.ckpt is a file",
    ),
    # Hydra's own errors: one line, not a 60-line traceback
    (
        ["scripts/convert.py", "{ckpt}", "conversion.timestep=4"],
        1,
        r"Could not override 'conversion\.timestep'",
    ),
]


@pytest.mark.parametrize(
    ("command", "status", "message"), CASES, ids=[" ".join(c[0][::2]) for c in CASES]
)
def test_bad_input_gets_one_line(
    command: list[str], status: int, message: str, tmp_path: Path
) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"never read: the input is refused first")
    if "--nir" in command:  # a run's checkpoint with its checked .nir beside it
        ckpt.with_suffix(".nir").write_bytes(b"the run's")
    if command == ["scripts/summarize.py", "{ckpt}"]:  # a run directory, its config damaged
        ckpt.unlink()
        (ckpt / ".hydra").mkdir(parents=True)
        (ckpt / ".hydra" / "config.yaml").write_text("model: [resnet20\n")
    args = [sys.executable, *(a.format(ckpt=ckpt) for a in command)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert re.search(message, lines[-1]), result.stderr
    assert not (tmp_path / "cache").exists()
    assert sorted(tmp_path.iterdir()) == sorted({ckpt, *tmp_path.glob("model.nir")})


def test_train_py_gives_a_bad_setting_one_line(tmp_path: Path) -> None:
    """Hydra printed the message at the end of a 20-line traceback."""
    run = [sys.executable, "train.py", "experiment=quickstart", "data.batch_size=0",
           f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "train.py: error: data.batch_size=0 must be an integer >= 1. "
        "(HYDRA_FULL_ERROR=1 shows the traceback)"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()
    full = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert full.returncode == 1 and "Traceback" in full.stderr and "SettingsError" in full.stderr


def test_a_failed_sweep_job_leaves_the_others_to_run(tmp_path: Path) -> None:
    """The one-line exit (SystemExit) ended a whole -m sweep at its first bad job; in a sweep
    Hydra records the failure and launches the rest."""
    run = [sys.executable, "train.py", "-m", "experiment=quickstart", "data.batch_size=0,-1",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert "data.batch_size=-1" in result.stdout + result.stderr  # the second job was launched
    assert "data.batch_size=0 must be an integer >= 1" in result.stderr
