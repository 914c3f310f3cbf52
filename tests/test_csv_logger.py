"""The run's CSV logger: a resumed run continues the metrics file, and no rewrite loses rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from neurocuda.training.csv_logger import ResumableCSVLogger


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_resumed_file_takes_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    first = ResumableCSVLogger(tmp_path, name="csv", version=0)
    first.log_metrics({"val/acc": 0.5}, step=3)
    first.save()
    # the resumed run logs a column the file lacks (e.g. the fine-tuning stage's first metric)
    resumed = ResumableCSVLogger(tmp_path, name="csv", version=0, resume=True)
    resumed.log_metrics({"finetune/loss_step": 0.25}, step=4)
    resumed.save()
    rows = _rows(Path(resumed.experiment.metrics_file_path))
    assert [(r["step"], r["val/acc"], r["finetune/loss_step"]) for r in rows] == [
        ("3", "0.5", ""),
        ("4", "", "0.25"),
    ]


def test_a_failed_header_rewrite_leaves_the_file_whole(tmp_path: Path) -> None:
    logger = ResumableCSVLogger(tmp_path, name="csv", version=0)
    logger.log_metrics({"val/acc": 0.5}, step=3)
    logger.save()
    path = Path(logger.experiment.metrics_file_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="fields not in fieldnames"):  # rows hold val/acc
        logger.experiment._rewrite_with_new_header(["step", "finetune/loss_step"])
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_rows_counted_for_a_checkpoint_are_on_disk_and_lost_ones_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The rows were appended without fsync while the checkpoint recording their count was
    fsynced: after a power loss the resumed file lacked rows and nothing said so."""
    from neurocuda.training import csv_logger

    synced: list[Path] = []
    monkeypatch.setattr(csv_logger, "sync_to_disk", synced.append)
    logger = ResumableCSVLogger(tmp_path, name="csv", version=0)
    for step in range(3):
        logger.log_metrics({"val/acc": 0.5}, step=step)
    count = logger.experiment.rows_written()
    path = Path(logger.experiment.metrics_file_path)
    assert count == 3 and synced == [path]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))  # one row left
    resumed = ResumableCSVLogger(tmp_path, name="csv", version=0, resume=True)
    with caplog.at_level("WARNING"):
        resumed.experiment.keep_rows(count)
    assert "holds 1 metric rows but the restored checkpoint recorded 3" in caplog.text
