"""A CSVLogger whose metrics file a resumed run continues, cut back to its checkpoint's rows."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from neurocuda.files import atomic_write_text, sync_to_disk

log = logging.getLogger(__name__)


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer, except that an existing metrics file is kept (not deleted) until the
    run says how many of its rows to keep (:meth:`keep_rows`) or that it starts anew."""

    def _check_log_dir_exists(self) -> None:
        return None

    def keep_rows(self, count: int | None) -> None:
        """Keep the header and the first ``count`` rows of the file (all of them: None) and
        continue it; drop the rows recorded in memory but not yet written."""
        path = Path(self.metrics_file_path)
        self.metrics = []
        if not path.is_file():
            self.metrics_keys = []
            return
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
        header, body = (rows[0], rows[1:]) if rows else ([], [])
        if count is not None and count > len(body):
            log.warning(
                "%s holds %d metric rows but the restored checkpoint recorded %d: rows were lost "
                "(the file damaged or replaced); the resumed run continues after the %d left.",
                path, len(body), count, len(body),
            )  # fmt: skip
        if count is not None and count < len(body):
            out = io.StringIO()
            csv.writer(out, lineterminator="\r\n").writerows([header, *body[:count]])
            atomic_write_text(path, out.getvalue())
        self.metrics_keys = sorted(header)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Lightning's rewrite for new columns, written whole to a temporary file and renamed:
        Lightning's own truncates the file first, so a kill (or an error) while it writes
        loses every row logged before."""
        path = Path(self.metrics_file_path)
        with path.open(newline="") as file:
            rows = list(csv.DictReader(file))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, out.getvalue())

    def start_anew(self) -> None:
        """Delete a metrics file left by an earlier run in the same directory."""
        Path(self.metrics_file_path).unlink(missing_ok=True)
        self.metrics_keys = []

    def rows_written(self) -> int:
        """Write the recorded metrics to the file and flush it to the disk (the checkpoint that
        records the count must not outlive the rows after a power loss); the rows it holds."""
        self.save()
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        sync_to_disk(path)
        with path.open(newline="") as file:
            return max(sum(1 for _ in csv.reader(file)) - 1, 0)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing one metrics file per run directory (``version`` fixed, e.g. 0).

    With ``resume=False`` a file left by an earlier run there is deleted, as Lightning does. With
    ``resume=True`` it is kept; the :class:`~callbacks.csv_resume.CSVResume` callback then cuts it
    back to the rows logged when the restored checkpoint was saved (the killed run's later rows are
    logged again by the resumed run), so the file ends as an uninterrupted run's would.
    """

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = resume

    @property
    @rank_zero_experiment
    def experiment(self) -> _ContinuingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
            if self.resume:  # continued under its own header, whatever restore cuts it back
                self._experiment.keep_rows(None)
            else:
                self._experiment.start_anew()
        return self._experiment
