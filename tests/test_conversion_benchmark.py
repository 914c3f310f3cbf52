"""scripts/benchmark_conversion.py on a tiny checkpoint: every row of the ablation, its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import ROOT, tiny_run_overrides
from train import train


def test_ablation_rows_of_a_checkpoint(train_cfg, tiny_archive: Path, tmp_path: Path) -> None:
    train(train_cfg("~conversion", "test=false"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    tiny = [o.replace("+model.", "++model.") for o in tiny_run_overrides(tiny_archive, tmp_path)]
    out = tmp_path / "bench"
    command = [sys.executable, "scripts/benchmark_conversion.py", "--relu-ckpt", str(ckpt),
               "--images", "16", "--finetune-batches", "2", "--timesteps", "1", "2", "4",
               "--out", str(out), *tiny]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == [
        "no correction",
        "corrected (default)",
        "corrected + fine-tuned at T=4 (2 batches)",
    ]
    assert {r["ann"] for r in rows} == {rows[0]["ann"]}  # one ANN, the checkpoint's
    for row in rows:
        assert row["images"] == 16
        assert sorted(map(int, row["snn"])) == [1, 2, 4]  # --timesteps
        assert all(0.0 <= a <= 1.0 for a in row["snn"].values())
        assert row["cpu_minutes"]["evaluate"] > 0
    assert rows[0]["cpu_minutes"]["convert"] > 0 and rows[2]["cpu_minutes"]["fine-tune"] > 0
    assert "corrected + fine-tuned" in result.stdout  # the printed table

    # a given fine-tuning checkpoint: only its row, not re-run
    finetuned = next(out.glob("finetune_*/checkpoints/finetune/last.ckpt"))
    again = tmp_path / "bench_given"
    command = [sys.executable, "scripts/benchmark_conversion.py", "--relu-ckpt", str(ckpt),
               "--variants", "finetuned", "--finetuned-ckpt", str(finetuned), "--images", "16",
               "--timesteps", "4", "--out", str(again), *tiny]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((again / "results.json").read_text())
    assert row["variant"] == f"corrected + fine-tuned at T=4 ({finetuned})"
    assert row["snn"] == {"4": rows[2]["snn"]["4"]} and row["ann"] == rows[2]["ann"]
    assert "fine-tune" not in row["cpu_minutes"]

    # the rows as curves: each run's plot, and earlier runs' results in one figure, a panel each
    both = tmp_path / "both"
    command = [sys.executable, "scripts/benchmark_conversion.py", "--out", str(both), "--plot",
               str(out / "results.json"), str(again / "results.json")]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for png in (out / "ablation.png", again / "ablation.png", both / "ablation.png"):
        assert png.read_bytes().startswith(b"\x89PNG")
    assert Image.open(both / "ablation.png").width > Image.open(out / "ablation.png").width
    command[-1] = str(ROOT / "README.md")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "is not a results.json" in result.stderr
