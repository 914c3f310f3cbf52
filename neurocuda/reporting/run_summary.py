"""The one summary a run ends with: a rich panel on the console and ``summary.json`` beside it.

Built from objects the run already holds (test metrics, the NIR round-trip report, the deployment
report); nothing is re-run. ``train.py`` and ``scripts/deploy.py`` both print it with
:func:`report_summary`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from neurocuda.files import atomic_write_text
from neurocuda.nir.verify import RoundTripReport

SUMMARY_FILE = "summary.json"


@dataclass
class NIRCheck:
    """The round trip of one ``.nir`` file: re-executed from the file vs the native SNN."""

    path: str
    max_abs_diff: float
    divergent_images: int
    images: int
    timesteps: list[int]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff == 0.0 and self.divergent_images == 0

    @classmethod
    def from_report(cls, path: str | os.PathLike[str], report: RoundTripReport) -> NIRCheck:
        return cls(
            path=str(path),
            max_abs_diff=float(report.worst_diff),
            divergent_images=int(report.total_divergent),
            images=int(report.images),
            timesteps=sorted(report.max_abs_diff),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


@dataclass
class DeploymentSummary:
    """The headline figures of a deployment report (``neurocuda.deploy.report.summarize``)."""

    target: str
    accuracy: float
    images: int
    timesteps: int
    energy_uj_per_image: float
    """The target's energy estimate (Loihi figures, neurocuda/metrics/energy.py)."""
    ann_fp32_uj_per_image: float
    report_path: str
    source: str = ""
    cores: int | None = None
    chips: int | None = None


@dataclass
class FinetuneSummary:
    """The SNN fine-tuning stage: its T, best checkpoint, validation accuracy and NIR check."""

    timesteps: int
    checkpoint: str
    val_accuracy: dict[int, float] = field(default_factory=dict)
    nir: NIRCheck | None = None


@dataclass
class RunSummary:
    """What a run produced; :meth:`as_dict` is ``summary.json``."""

    run_dir: str = ""
    checkpoint: str = ""
    ann_test_accuracy: float | None = None
    ann_test_accuracy_float32: float | None = None
    """The same ANN evaluated in float32 as the SNN is: the gaps' reference (``test/acc`` is at the
    trainer's precision, bf16-mixed where the device has bfloat16)."""
    snn_test_accuracy: dict[int, float] = field(default_factory=dict)
    snn_source: str = ""
    """Which SNN ``snn_test_accuracy`` measures (the best ANN converted, or the fine-tuned SNN)."""
    nir: NIRCheck | None = None
    deployment: DeploymentSummary | None = None
    finetune: FinetuneSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["snn_test_gap"] = self.snn_test_gap
        data["nir"] = self.nir.as_dict() if self.nir else None
        if self.finetune is not None and self.finetune.nir is not None:
            data["finetune"]["nir"] = self.finetune.nir.as_dict()
        return data

    @property
    def snn_test_gap(self) -> dict[int, float]:
        """ANN test accuracy (float32 where measured) minus SNN test accuracy per T (empty
        without both)."""
        reference = self.ann_test_accuracy_float32
        reference = self.ann_test_accuracy if reference is None else reference
        if reference is None:
            return {}
        return {t: reference - acc for t, acc in self.snn_test_accuracy.items()}


def accuracy_per_timestep(metrics: dict[str, float], prefix: str) -> dict[int, float]:
    """``{T: value}`` of metrics named ``<prefix><T>`` (e.g. ``test/snn_acc_T``), by T."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = {int(m.group(1)): float(v) for k, v in metrics.items() if (m := pattern.match(k))}
    return dict(sorted(found.items()))


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _nir_line(check: NIRCheck) -> str:
    verdict = "[green]PASS[/]" if check.passed else "[red]FAIL[/]"
    steps = ",".join(map(str, check.timesteps))
    return (
        f"{verdict}: max abs diff {check.max_abs_diff:g}, {check.divergent_images}/{check.images} "
        f"divergent images at T={steps}"
    )


def _shown(path: str, run_dir: str) -> str:
    """``path`` relative to ``run_dir`` when inside it (summary.json keeps it whole)."""
    if run_dir and path and Path(path).is_relative_to(run_dir):
        return str(Path(path).relative_to(run_dir))
    return path or "-"


def render(summary: RunSummary) -> Panel:
    """The summary as a rich panel (a two-column table), as :func:`report_summary` prints it;
    files inside the run directory are shown relative to it."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    if summary.run_dir:
        table.add_row("Run directory", summary.run_dir)
    if summary.ann_test_accuracy is not None:
        float32 = summary.ann_test_accuracy_float32
        shown = _percent(summary.ann_test_accuracy)
        if float32 is not None and round(float32, 4) != round(summary.ann_test_accuracy, 4):
            shown += f" ({_percent(float32)} in float32 as the SNN runs: the gaps' reference)"
        table.add_row("ANN test accuracy", shown)
    gaps = summary.snn_test_gap
    for t, acc in summary.snn_test_accuracy.items():
        gap = f" (ANN - SNN: {100 * gaps[t]:.2f} pp)" if t in gaps else ""
        table.add_row(f"SNN test accuracy T={t}", _percent(acc) + gap)
    if summary.snn_test_accuracy and summary.snn_source:
        table.add_row("SNN tested", summary.snn_source)
    if summary.nir is not None:
        table.add_row("NIR round trip", _nir_line(summary.nir))
        table.add_row("NIR file", _shown(summary.nir.path, summary.run_dir))
    if (finetune := summary.finetune) is not None:
        val = ", ".join(f"T={t}: {_percent(a)}" for t, a in finetune.val_accuracy.items())
        table.add_row(f"Fine-tuned SNN (T={finetune.timesteps})", f"val {val}" if val else "-")
        if finetune.nir is not None:
            table.add_row("Fine-tuned NIR round trip", _nir_line(finetune.nir))
            table.add_row("Fine-tuned NIR file", _shown(finetune.nir.path, summary.run_dir))
        table.add_row("Fine-tuned checkpoint", _shown(finetune.checkpoint, summary.run_dir))
    if (deploy := summary.deployment) is not None:
        table.add_row(
            f"Deployment ({deploy.target})",
            f"{_percent(deploy.accuracy)} on {deploy.images} test images at T={deploy.timesteps}",
        )
        if deploy.cores is not None:
            resources = f"{deploy.cores} neuro-cores, {deploy.chips} chip(s)"
            table.add_row("Loihi 2 resources", resources)
        table.add_row(
            "Energy per image",
            f"{deploy.energy_uj_per_image:.3f} uJ (Loihi estimate; ANN fp32 "
            f"{deploy.ann_fp32_uj_per_image:.3f} uJ)",
        )
        if deploy.source:
            table.add_row("Deployed graph", _shown(deploy.source, summary.run_dir))
        table.add_row("Deployment report", _shown(deploy.report_path, summary.run_dir))
    if summary.checkpoint:
        table.add_row("Checkpoint", _shown(summary.checkpoint, summary.run_dir))
    if summary.run_dir:
        table.add_row("Summary file", SUMMARY_FILE)
    return Panel(table, title="[bold]neurocuda run summary", expand=False)


def report_summary(summary: RunSummary, console: Console | None = None) -> Path | None:
    """Print :func:`render` and, with a ``run_dir``, write ``<run_dir>/summary.json``
    atomically; return that file."""
    (console or Console()).print(render(summary))
    if not summary.run_dir:
        return None
    path = Path(summary.run_dir) / SUMMARY_FILE
    return atomic_write_text(path, json.dumps(summary.as_dict(), indent=2) + "\n")
