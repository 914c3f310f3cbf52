"""Progress of long loops: a rich bar on a terminal, a plain line every few percent otherwise.

A log file (``nohup``, a SLURM job) cannot show a redrawn bar; there :class:`LineProgress` prints
``<what>: 40% (400/1000 images), 85.3 images/s, ETA 0:00:07`` lines instead. :func:`progress`
picks one from ``sys.stdout.isatty()``; the Lightning text progress bar (callbacks/progress.py)
uses :class:`LineProgress` too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

EVERY_PERCENT = 10
"""Default spacing of :class:`LineProgress` lines, in percent of the total."""
UNKNOWN_TOTAL_SECONDS = 30.0
"""Spacing of lines when the total is unknown."""


class Advance(Protocol):
    def __call__(self, amount: int = 1, status: str = "") -> None: ...


def duration(seconds: float) -> str:
    """``H:MM:SS`` of a number of seconds."""
    return str(timedelta(seconds=round(seconds)))


class LineProgress:
    """Prints a line whenever another ``every_percent`` of ``total`` is done (or every
    :data:`UNKNOWN_TOTAL_SECONDS` without a total), with the rate and the time left."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str = "images",
        every_percent: float = EVERY_PERCENT,
    ) -> None:
        if not 0 < every_percent <= 100:
            raise ValueError(f"every_percent={every_percent} must be in (0, 100].")
        self.description = description
        self.total = total
        self.unit = unit
        self.every_percent = every_percent
        self.done = 0
        self._start = time.perf_counter()
        self._last_line = self._start
        self._next_percent = every_percent

    @property
    def elapsed(self) -> float:
        """Seconds since this progress started."""
        return time.perf_counter() - self._start

    def advance(self, amount: int = 1, status: str = "") -> None:
        """Count ``amount`` more units; print a line when the next step is reached."""
        self.done += amount
        now = time.perf_counter()
        if self.total:
            percent = 100 * self.done / self.total
            if percent + 1e-9 < self._next_percent:
                return
            while self._next_percent <= percent + 1e-9:
                self._next_percent += self.every_percent
        elif now - self._last_line < UNKNOWN_TOTAL_SECONDS:
            return
        self._last_line = now
        print(self.line(status), flush=True)

    def line(self, status: str = "") -> str:
        """``<description>: P% (done/total unit), R unit/s, ETA H:MM:SS[, status]``."""
        elapsed = max(self.elapsed, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = max(0, self.total - self.done) / rate if rate else float("inf")
            eta = duration(left) if left != float("inf") else "?"
            head = (
                f"{self.description}: {100 * self.done / self.total:3.0f}% "
                f"({self.done}/{self.total} {self.unit}), {rate:.1f} {self.unit}/s, ETA {eta}"
            )
        else:
            head = (
                f"{self.description}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s, "
                f"elapsed {duration(elapsed)}"
            )
        return f"{head}, {status}" if status else head


@contextmanager
def progress(
    description: str,
    total: int | None,
    unit: str = "images",
    enabled: bool = True,
    every_percent: float = EVERY_PERCENT,
) -> Iterator[Advance]:
    """Yield ``advance(amount=1, status="")`` for a loop over ``total`` units: a transient rich bar
    when stdout is a terminal, :class:`LineProgress` lines when it is not, nothing when
    ``enabled`` is false."""
    if not enabled:
        yield lambda amount=1, status="": None
        return
    if not sys.stdout.isatty():
        yield LineProgress(description, total, unit, every_percent).advance
        return
    columns = (
        TextColumn(f"[bold]{description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(amount: int = 1, status: str = "") -> None:
            bar.update(task, advance=amount, status=status)

        yield advance
