"""``train.py experiment=quickstart`` with stdout in a file: progress lines and the end-of-run
summary (console panel and summary.json) that holds the run's own figures."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neurocuda.progress import LineProgress
from neurocuda.reporting.run_summary import RunSummary, accuracy_per_timestep, render
from tests.conftest import ROOT, tiny_run_overrides


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """One tiny quickstart run with deploy=loihi2, stdout and stderr written to ``out.txt``."""
    tmp = tmp_path_factory.mktemp("summary")
    run = tmp / "run"
    overrides = [
        *(o for o in tiny_run_overrides(tiny_archive, tmp) if "progress_bar" not in o),
        "experiment=quickstart",
        "++trainer.limit_train_batches=3",
        "trainer.precision=32",
        "conversion.timesteps=[4,8]",
        "conversion.eval_subset=40",
        "deploy=loihi2",
        "deploy.timesteps=8",
        "deploy.max_images=16",
        "trainer.log_every_n_steps=1",  # 3 batches: Lightning warns about a longer interval
        f"hydra.run.dir={run}",
    ]
    with (tmp / "out.txt").open("w") as out:  # not a terminal: text progress, plain panel
        result = subprocess.run(
            [sys.executable, "train.py", *overrides],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=600,
            env={**os.environ, "COLUMNS": "100"},
        )  # fmt: skip
    assert result.returncode == 0, (tmp / "out.txt").read_text()[-3000:]
    return run


def _logged(run: Path) -> dict[str, float]:
    """The last value of every metric in the run's CSV log."""
    values: dict[str, float] = {}
    with next(run.glob("csv/version_*/metrics.csv")).open() as file:
        for row in csv.DictReader(file):
            values |= {k: float(v) for k, v in row.items() if v not in ("", None)}
    return values


def test_summary_json_holds_the_runs_figures(quickstart_run: Path) -> None:
    summary = json.loads((quickstart_run / "summary.json").read_text())
    logged = _logged(quickstart_run)
    assert summary["run_dir"] == str(quickstart_run)
    assert summary["ann_test_accuracy"] == pytest.approx(logged["test/acc"])
    assert summary["ann_test_accuracy_float32"] == pytest.approx(logged["test/ann_acc_float32"])
    assert summary["snn_test_accuracy"] == {
        "4": pytest.approx(logged["test/snn_acc_T4"]),
        "8": pytest.approx(logged["test/snn_acc_T8"]),
    }
    assert summary["snn_test_gap"]["8"] == pytest.approx(logged["test/snn_gap_T8"], abs=1e-6)
    assert summary["snn_source"] == "the best ANN checkpoint, converted"
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.is_file() and checkpoint.parent == quickstart_run / "checkpoints"
    nir = summary["nir"]
    assert nir["path"] == str(checkpoint.with_suffix(".nir")) and Path(nir["path"]).is_file()
    assert nir["max_abs_diff"] == 0.0 and nir["divergent_images"] == 0 and nir["passed"] is True
    assert nir["images"] == 16 and nir["timesteps"] == [4, 8]
    deploy = summary["deployment"]
    report = json.loads((quickstart_run / "deploy" / "deploy_loihi2.json").read_text())
    assert deploy["report_path"] == str(quickstart_run / "deploy" / "deploy_loihi2.md")
    assert deploy["target"] == "loihi2" and deploy["images"] == 16 and deploy["timesteps"] == 8
    assert deploy["accuracy"] == report["accuracy"]
    assert deploy["cores"] == report["target_info"]["resources"]["cores"] >= 1
    assert deploy["chips"] == report["target_info"]["resources"]["chips"] >= 1
    assert deploy["energy_uj_per_image"] == report["energy"]["loihi_uj"] > 0
    assert summary["finetune"] is None


def test_console_shows_the_summary_panel(quickstart_run: Path) -> None:
    out = (quickstart_run.parent / "out.txt").read_text()
    summary = json.loads((quickstart_run / "summary.json").read_text())
    panel = out[out.index("neurocuda run summary") :]
    rows = [
        rf"ANN test accuracy +{100 * summary['ann_test_accuracy']:.2f}%",
        rf"SNN test accuracy T=8 +{100 * summary['snn_test_accuracy']['8']:.2f}%",
        r"NIR round trip +PASS: max abs diff 0, 0/16 divergent images",
        r"NIR file +checkpoints/epoch_000\.nir",
        rf"Deployment \(loihi2\) +{100 * summary['deployment']['accuracy']:.2f}% on 16",
        rf"Loihi 2 resources +{summary['deployment']['cores']} neuro-cores",
        r"Deployment report +deploy/deploy_loihi2\.md",
        r"Summary file +summary\.json",
    ]
    for row in rows:
        assert re.search(row, panel), (row, panel)


def test_progress_lines_appear_in_a_log_file(quickstart_run: Path) -> None:
    out = (quickstart_run.parent / "out.txt").read_text()
    epoch = re.findall(
        r"^Epoch 1/1: +(\d+)% \((\d)/3 batches\), [\d.]+ batches/s, ETA \d+:\d\d:\d\d, "
        r"\d+ images/s, loss [\d.]+$",
        out,
        re.MULTILINE,
    )
    assert [int(p) for p, _ in epoch] == [33, 67, 100]
    assert re.search(r"^Validation \(epoch 1\): .*val/acc [\d.]+", out, re.MULTILINE)
    assert re.search(r"^SNN eval T<=8: 100% \(40/40 images\), .*acc@T8", out, re.MULTILINE)
    assert re.search(r"^deploy\[loihi2\] T=8: 100% \(16/16 images\)", out, re.MULTILINE)
    assert "\r" not in out  # nothing redrawn


def test_a_normal_run_prints_no_warnings(quickstart_run: Path) -> None:
    out = (quickstart_run.parent / "out.txt").read_text()
    warned = re.findall(r"^.*\.py:\d+: .*$", out, re.MULTILINE)  # warnings.warn's "file.py:N: "
    assert not warned, warned


def test_line_progress_prints_each_step_once(capsys: pytest.CaptureFixture[str]) -> None:
    lines = LineProgress("work", total=10, unit="items", every_percent=25)
    for _ in range(10):
        lines.advance(1)
    percents = [line.split(":")[1].split("%")[0] for line in capsys.readouterr().out.splitlines()]
    assert [int(p) for p in percents] == [30, 50, 80, 100]


def test_accuracy_per_timestep_and_empty_summary() -> None:
    metrics = {"test/snn_acc_T16": 0.5, "test/snn_acc_T4": 0.25, "test/snn_gap_T4": 0.1}
    assert accuracy_per_timestep(metrics, "test/snn_acc_T") == {4: 0.25, 16: 0.5}
    assert render(RunSummary()).renderable.row_count == 0


def test_the_summary_names_a_nir_file_that_is_on_disk(tmp_path: Path) -> None:
    """The tested checkpoint's own file when it has one (re-executed when another process wrote
    it); else the newest checked file still on disk, not one ModelCheckpoint deleted with a
    superseded best checkpoint."""
    from types import SimpleNamespace

    from callbacks.summary import _nir_check
    from neurocuda.nir.verify import RoundTripReport

    names = ("epoch_014", "last", "epoch_059")  # checked in this order; epoch_059 since deleted
    checks = {str(tmp_path / f"{n}.nir"): RoundTripReport(16, {4: 0.0}, {4: 0}) for n in names}
    for name in names[:2]:
        (tmp_path / f"{name}.nir").write_bytes(b"")
    rechecked: list[Path] = []

    def verify_saved(trainer: object, path: Path, checkpoint: str) -> None:
        rechecked.append(path)
        checks[str(path)] = RoundTripReport(16, {4: 0.0}, {4: 0})

    round_trip = SimpleNamespace(checks=checks, verify_saved=verify_saved)
    best = str(tmp_path / "epoch_060.ckpt")  # a best epoch without a conversion
    assert _nir_check(round_trip, best, None).path == str(tmp_path / "last.nir")
    kept = _nir_check(round_trip, str(tmp_path / "epoch_014.ckpt"), None)
    assert kept.path.endswith("epoch_014.nir") and not rechecked
    assert _nir_check(SimpleNamespace(checks={}), best, None) is None
    # a resumed run's file from before the kill: on disk, not checked by this process
    (tmp_path / "epoch_030.nir").write_bytes(b"")
    fitted = SimpleNamespace(datamodule="the run's data", default_root_dir=str(tmp_path))
    resumed = _nir_check(round_trip, str(tmp_path / "epoch_030.ckpt"), fitted)
    assert resumed.path == str(tmp_path / "epoch_030.nir") == str(rechecked[0])
    # beside an ANN given from another run (ckpt_path, finetune.start_from): made with that run's
    # settings, so a re-check with this run's failed the finished run ("not exact: 3.07")
    other = tmp_path.parent / f"{tmp_path.name}_other"
    other.mkdir()
    (other / "epoch_001.nir").write_bytes(b"")
    _nir_check(round_trip, str(other / "epoch_001.ckpt"), fitted)
    assert rechecked == [tmp_path / "epoch_030.nir"]
