"""Hydra multirun with offline W&B runs, the sweep summary, and an Optuna sweep, on tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from neurocuda.reporting.sweep_summary import summarize
from neurocuda.reporting.wandb_offline import last_values, read_offline_run
from tests.conftest import ROOT, tiny_run_overrides


def _sweep(overrides: list[str], project_root: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if project_root is not None:  # paths.root_dir: logs/ (and the sweep dir) go under it
        env["PROJECT_ROOT"] = str(project_root)
    return subprocess.run(
        [sys.executable, "train.py", "-m", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tiny(archive: Path, tmp_path: Path) -> list[str]:
    return [
        *tiny_run_overrides(archive, tmp_path),
        "conversion.timesteps=[1,2]",
        "conversion.calibration.batches=1",
        "conversion.eval_subset=16",
        "conversion.callbacks.nir_round_trip.num_images=4",
    ]


@pytest.fixture(scope="module")
def sweep_dir(tiny_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    result = _sweep(
        [
            *_tiny(tiny_archive, tmp),
            "logger=wandb",
            "model.optimizer.lr=0.05,0.1",
        ],
        # no hydra.sweep.dir / paths override: the sweep directory is resolved from the configs
        # exactly as in the README's command (which once failed on it)
        project_root=tmp,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp / "logs" / "train" / "multiruns").iterdir()
    return sweep


def test_each_job_has_its_own_complete_offline_wandb_run(sweep_dir: Path) -> None:
    runs = [
        read_offline_run(next((sweep_dir / job / "wandb").glob("offline-run-*")))
        for job in ("0", "1")
    ]
    groups = set()
    for run in runs:
        logged = last_values(run["history"])
        assert {"val/acc", "test/acc", "snn/acc_T1", "snn/acc_T2", "nir/max_abs_diff"} <= set(
            logged
        )
        assert logged["nir/max_abs_diff"] == 0.0
        assert "snn/accuracy_vs_T_table/path" in logged  # the accuracy-vs-T line plot
        assert "snn/accuracy_vs_T_png/path" in logged  # and its PNG
        assert any(a.startswith("nir-") for a in run["artifacts"])  # the NIR file
        assert any(a.startswith("model-") for a in run["artifacts"])  # the checkpoints
        groups.add(run["config"]["logger"]["wandb"]["group"])
    assert len(groups) == 1 and groups.pop().startswith("train-")  # one W&B group per sweep
    assert {r["config"]["model"]["optimizer"]["lr"] for r in runs} == {0.05, 0.1}


def test_summarize_turns_the_sweep_into_a_table_and_plots(sweep_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/summarize.py", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (sweep_dir / "summary.md").read_text()
    assert "model.optimizer.lr=0.05" in table and "model.optimizer.lr=0.1" in table
    assert "SNN T=1 %" in table and "SNN T=2 %" in table and "NIR max diff" in table
    rows = [line for line in table.splitlines() if line.startswith("| model.optimizer.lr=")]
    assert len(rows) == 2 and all("| 0 |" in row for row in rows)  # NIR diff exactly 0
    for png in ("summary_accuracy_vs_T.png", "summary_spike_rates.png", "summary_curves.png"):
        assert (sweep_dir / png).read_bytes()[:4] == b"\x89PNG"
    curves = (sweep_dir / "summary_curves.md").read_text()  # the one epoch of each run
    assert "### ANN, validation (`val/acc`, %)" in curves and "converted SNN T=2" in curves
    assert curves.count("| model.optimizer.lr=0.05 | ") == curves.count("### ") >= 3


def _log_run(
    run: Path, overrides: list[str], rows: list[dict[str, float]], error: str | None = None
) -> None:
    """A run directory as train.py leaves it: its config, overrides and CSV logger's metrics, and
    its summary file, or with ``error`` the error line its log ends with instead."""
    (run / ".hydra").mkdir(parents=True)
    if error is None:
        (run / "summary.json").write_text("{}")
    else:
        (run / "train.log").write_text(f"[2026-12-08 01:00:00,000][__main__][ERROR] - {error}\n")
    (run / ".hydra" / "config.yaml").write_text("model: {arch: cifarnet, activation: qcfs}\n")
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    logger = CSVLogger(run, name="csv", version=0)
    for step, row in enumerate(rows):
        logger.log_metrics(row, step=step)
    logger.save()


def test_summarize_reads_fine_tuning_runs_and_their_learning_curves(tmp_path: Path) -> None:
    """A fine-tuning run's SNN figures are its end-of-run test ones (not the validation subset's
    of the ANN's conversions), its NIR figure the worst round trip; the learning curves hold each
    metric's last value per epoch, epochs from 1, the ANN fit's and the fine-tuning's apart."""
    ann = [
        {"epoch": 0, "train/acc": 0.40},
        {
            "epoch": 0,
            "val/acc": 0.50,
            "snn/acc_T4": 0.30,
            "snn/ann_acc": 0.52,
            "snn/gap_T4": 0.22,
            "nir/max_abs_diff": 0.0,
        },
    ]
    for width, (val_t4, test_t4, diff) in {
        "1.0": ((0.61, 0.70), 0.68, 0.25),  # a round trip that was not exact
        "0.5": ((0.64, 0.72), 0.71, 0.0),
    }.items():
        fine_tuning = [
            {"epoch": 0, "finetune/acc": 0.55, "finetune/loss_step": 1.5},
            {"epoch": 0, "val/snn_acc_T4": val_t4[0], "finetune/nir/max_abs_diff": 0.0},
            {"epoch": 1, "val/snn_acc_T4": 0.0},  # overwritten later in the same epoch
            {"epoch": 1, "val/snn_acc_T4": val_t4[1], "finetune/nir/max_abs_diff": diff},
            {
                "epoch": 1,
                "test/acc": 0.74,
                "test/snn_acc_T4": test_t4,
                "test/snn_gap_T4": 0.74 - test_t4,
            },
        ]
        _log_run(
            tmp_path / width,
            ["finetune=snn", f"finetune.surrogate_width={width}"],
            ann + fine_tuning,
        )
    runs = [tmp_path / "1.0", tmp_path / "0.5"]  # two dirs of runs side by side
    with pytest.raises(ValueError, match=r"2 directories of runs: name the output dir"):
        summarize(runs)
    files = summarize(runs, tmp_path / "out")
    rows = [line.split(" | ") for line in files["table"].read_text().splitlines()[4:]]
    assert [r[0] for r in rows] == [  # in the order given
        "| finetune.surrogate_width=1.0",
        "| finetune.surrogate_width=0.5",
    ]
    header = files["table"].read_text().splitlines()[2].split(" | ")
    width_1, width_05 = (dict(zip(header, row, strict=True)) for row in rows)
    assert width_05["SNN"] == "fine-tuned, test" and width_05["SNN T=4 %"] == "71.00"
    assert width_05["gap T=4"] == "3.00" and width_05["NIR max diff"] == "0"
    assert width_1["NIR max diff"] == "0.25"  # the fine-tuned SNN's, not the ANN's exact one
    curves = files["curves_table"].read_text()
    titles = [line for line in curves.splitlines() if line.startswith("### ")]
    assert titles == [
        "### ANN, validation (`val/acc`, %)",
        "### ANN, training (`train/acc`, %)",
        "### converted SNN T=4, validation (`snn/acc_T4`, %)",
        "### fine-tuning, training (at its T) (`finetune/acc`, %)",
        "### fine-tuned SNN T=4, validation (`val/snn_acc_T4`, %)",
    ]
    section = curves.split("`val/snn_acc_T4`")[1]
    assert "| finetune.surrogate_width=1.0 | 61.0 | 70.0 |" in section
    assert "| finetune.surrogate_width=0.5 | 64.0 | 72.0 |" in section
    assert files["curves_plot"].read_bytes()[:4] == b"\x89PNG"
    assert "spike_rate_plot" not in files  # no spike rates logged: no empty plot


def test_summarize_gives_replicates_of_an_arm_their_mean_and_deviation(tmp_path: Path) -> None:
    """Runs differing only in their seeds are one arm: a row of mean +- sample standard
    deviation per column (the worst NIR round trip); an arm of one run gets no such row."""
    arms = {
        "a7": (["finetune.optimizer.lr=1e-3", "data.shuffle_seed=7"], 0.70, 0.0),
        "a11": (["finetune.optimizer.lr=1e-3", "data.shuffle_seed=11"], 0.73, 0.25),
        "a13": (["finetune.optimizer.lr=1e-3", "+seed=13"], 0.76, 0.0),
        "b7": (["finetune.optimizer.lr=3e-4", "data.shuffle_seed=7"], 0.60, 0.0),
    }
    for name, (overrides, test_t4, diff) in arms.items():
        row = {"epoch": 0, "test/acc": 0.80, "test/snn_acc_T4": test_t4}
        row |= {"test/snn_gap_T4": 0.80 - test_t4, "finetune/nir/max_abs_diff": diff}
        _log_run(tmp_path / "runs" / name, ["finetune=snn", *overrides], [row])
    files = summarize(tmp_path / "runs", tmp_path / "out")
    lines = files["table"].read_text().splitlines()
    header = lines[2].split(" | ")
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in (x.split(" | ") for x in lines[4:])}
    assert len(rows) == 5  # four runs, one arm of three replicates
    mean = rows["| mean ± sd of 3: finetune.optimizer.lr=1e-3"]
    assert mean["SNN T=4 %"] == "73.00 ± 3.00"  # sample standard deviation (n - 1)
    assert mean["gap T=4"] == "7.00 ± 3.00" and mean["ANN test %"] == "80.00 ± 0.00"
    assert mean["NIR max diff"] == "0.25"  # the worst round trip, not an average
    assert mean["SNN"] == "fine-tuned, test" and mean["arch"] == "cifarnet"
    assert {row["status"] for row in rows.values()} == {"done"}
    assert not any("lr=3e-4" in label and "mean" in label for label in rows)


def test_summarize_marks_failed_runs_and_leaves_them_out_of_the_replicate_means(
    tmp_path: Path,
) -> None:
    """A failed job was a row of dashes with no mark, and the replicate row said "of 3" over the
    two runs that had figures."""
    for seed, test_t4 in ((7, 0.70), (11, 0.74)):
        row = {"epoch": 0, "test/acc": 0.80, "test/snn_acc_T4": test_t4}
        _log_run(tmp_path / "runs" / f"s{seed}", [f"data.shuffle_seed={seed}"], [row])
    _log_run(tmp_path / "runs" / "s13", ["data.shuffle_seed=13"], [{"epoch": 0, "val/acc": 0.1}],
             error="data.batch_size=0 must be >= 1.")  # fmt: skip
    (tmp_path / "runs" / "s17" / ".hydra").mkdir(parents=True)  # killed before it logged
    (tmp_path / "runs" / "s17" / ".hydra" / "config.yaml").write_text("model: {arch: cifarnet}\n")
    (tmp_path / "runs" / "s17" / ".hydra" / "overrides.yaml").write_text("- data.shuffle_seed=17\n")
    lines = summarize(tmp_path / "runs", tmp_path / "out")["table"].read_text().splitlines()
    header = lines[2].split(" | ")
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in (x.split(" | ") for x in lines[4:])}
    assert rows["| data.shuffle_seed=13"]["status"] == "failed: data.batch_size=0 must be >= 1."
    assert rows["| data.shuffle_seed=17"]["status"] == "unfinished"
    mean = rows["| mean ± sd of 2: all runs"]
    assert mean["status"] == "2 not done, left out" and mean["SNN T=4 %"] == "72.00 ± 2.83"


def test_summarize_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/summarize.py", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "No runs under" in result.stderr


def test_optuna_sweep_of_two_trials(tiny_archive: Path, tmp_path: Path) -> None:
    result = _sweep(
        [
            *_tiny(tiny_archive, tmp_path),
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            "optimized_metric=snn/acc_T2",
            "~conversion.callbacks.nir_round_trip",
            f"hydra.sweep.dir={tmp_path / 'optuna'}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = (tmp_path / "optuna" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "model.optimizer.lr" in best and "best_value" in best
    assert all(
        (tmp_path / "optuna" / str(i) / "checkpoints" / "last.ckpt").is_file() for i in range(2)
    )


def test_a_ddp_job_in_a_sweep_is_refused_and_the_summary_says_why(
    tiny_archive: Path, tmp_path: Path
) -> None:
    """Lightning starts DDP's second process by running the command line again: with -m it ran
    the whole sweep itself. The failed job's log was empty and its summary row unmarked."""
    sweep = tmp_path / "sweep"
    result = _sweep(
        [*_tiny(tiny_archive, tmp_path), "trainer=ddp_cpu,cpu", f"hydra.sweep.dir={sweep}"]
    )
    assert result.returncode != 0  # Hydra reports the failed job after running the other
    assert "A sweep (-m) with trainer.strategy=ddp on 2 processes" in result.stderr
    assert "Launching 2 jobs locally" in result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1
    lines = summarize(sweep)["table"].read_text().splitlines()
    statuses = [row.split(" | ")[1] for row in lines[4:]]
    assert statuses[0].startswith("failed: A sweep (-m) with trainer.strategy=ddp")
    assert statuses[1] == "done"
