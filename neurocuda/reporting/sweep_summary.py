"""Compare finished runs (one run dir or a sweep's dir of runs) from their local files alone.

Reads each run's ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``, the CSV logger's
``csv/version_*/metrics.csv`` and offline W&B runs' logs (no W&B account or server needed); writes a
markdown table and PNG plots.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from neurocuda.files import atomic_write_text, save_figure
from neurocuda.reporting.accuracy_plots import AccuracyCurve, plot_accuracy_curves

_ACC_T = re.compile(r"^snn/acc_T(\d+)$")


@dataclass
class RunSummary:
    """The last logged value of every metric of one run, plus what identifies the run."""

    path: Path
    label: str
    arch: str
    activation: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def snn_accuracy(self) -> dict[int, float]:
        """SNN accuracy per T (the last conversion of the run)."""
        found = {int(m[1]): v for k, v in self.metrics.items() if (m := _ACC_T.match(k))}
        return dict(sorted(found.items()))

    @property
    def mean_spike_rate(self) -> float:
        rates = [v for k, v in self.metrics.items() if k.startswith("snn/spike_rate/")]
        return sum(rates) / len(rates) if rates else math.nan

    def get(self, key: str) -> float:
        return self.metrics.get(key, math.nan)


def find_runs(directory: str | Path) -> list[Path]:
    """Run directories (holding ``.hydra/config.yaml``) at or below ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory of runs.")
    runs = sorted(p.parent.parent for p in root.glob("**/.hydra/config.yaml"))
    if not runs:
        raise FileNotFoundError(
            f"No runs under {root}: expected train.py output dirs holding .hydra/config.yaml "
            "(e.g. logs/train/multiruns/<timestamp>)."
        )
    return runs


def csv_metrics(run: Path) -> dict[str, float]:
    """Last value of every metric the CSV logger wrote in run directory ``run``."""
    metrics: dict[str, float] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                metrics.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return metrics


def _last_metrics(run: Path) -> dict[str, float]:
    """Last value of every metric from the CSV logger and from offline W&B runs, if any."""
    from neurocuda.reporting.wandb_offline import last_values, read_offline_run  # loads wandb

    metrics = csv_metrics(run)
    for wandb_run in sorted(run.glob("wandb/offline-run-*")):
        logged = last_values(read_offline_run(wandb_run)["history"])
        metrics.update(
            {
                k: float(v)
                for k, v in logged.items()
                if isinstance(v, int | float) and not k.startswith("_")
            }
        )
    return metrics


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


def load_runs(runs: list[Path]) -> list[RunSummary]:
    """Summarize run directories, labelling each by the overrides that differ between them."""
    overrides = {run: _overrides(run) for run in runs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(runs) > 1 else set()
    summaries = []
    for run in runs:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        label = " ".join(o for o in overrides[run] if o not in shared)
        summaries.append(
            RunSummary(
                path=run,
                label=label or run.name,
                arch=str(OmegaConf.select(cfg, "model.arch", default="?")),
                activation=str(OmegaConf.select(cfg, "model.activation", default="?")),
                metrics=_last_metrics(run),
            )
        )
    return summaries


def _fmt(value: float, percent: bool = False) -> str:
    if math.isnan(value):
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def markdown_table(runs: list[RunSummary]) -> str:
    """One row per run: ANN and SNN accuracy per T, gaps, spike rate, NIR diff, deployment."""
    timesteps = sorted({t for r in runs for t in r.snn_accuracy})
    deploy_keys = sorted({k for r in runs for k in r.metrics if k.startswith("deploy/")})
    header = ["run", "arch", "act", "ANN val %", "ANN test %"]
    header += [f"SNN T={t} %" for t in timesteps] + [f"gap T={t}" for t in timesteps]
    header += ["spike rate", "NIR max diff", "NIR divergent", *deploy_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in runs:
        ann = r.get("snn/ann_acc") if not math.isnan(r.get("snn/ann_acc")) else r.get("val/acc")
        row = [r.label, r.arch, r.activation, _fmt(ann, True), _fmt(r.get("test/acc"), True)]
        row += [_fmt(r.snn_accuracy.get(t, math.nan), True) for t in timesteps]
        row += [_fmt(100 * r.get(f"snn/gap_T{t}")) for t in timesteps]
        row += [
            _fmt(r.mean_spike_rate),
            _fmt(r.get("nir/max_abs_diff")),
            _fmt(r.get("nir/divergent_images")),
        ]
        row += [_fmt(r.get(k)) for k in deploy_keys]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_t(runs: list[RunSummary], path: Path) -> None:
    """SNN accuracy against T (log2 axis), one line per run, ANN accuracy dashed."""
    curves = []
    for r in runs:
        ann = r.get("snn/ann_acc")
        curves.append(AccuracyCurve(r.label, r.snn_accuracy, None if math.isnan(ann) else ann))
    plot_accuracy_curves(path, curves)


def plot_spike_rates(runs: list[RunSummary], path: Path) -> None:
    """Per-layer spike rates of every run as grouped bars."""
    layers = sorted(
        {k for r in runs for k in r.metrics if k.startswith("snn/spike_rate/")},
        key=lambda k: [r.metrics.get(k) is None for r in runs],
    )
    fig = Figure(figsize=(max(6, 0.5 * len(layers) + 3), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        xs = [j + i * width for j in range(len(layers))]
        ax.bar(xs, [r.get(k) for k in layers], width=width, label=r.label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
    ax.set_xticklabels(
        [k.removeprefix("snn/spike_rate/") for k in layers], rotation=60, ha="right", fontsize=7
    )
    ax.set_ylabel("spikes per neuron per step")
    ax.set_title("Spike rate per layer")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def summarize(directory: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``summary.md``, ``summary_accuracy_vs_T.png`` and ``summary_spike_rates.png``."""
    runs = load_runs(find_runs(directory))
    out = Path(out_dir or directory)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "table": out / "summary.md",
        "accuracy_plot": out / "summary_accuracy_vs_T.png",
        "spike_rate_plot": out / "summary_spike_rates.png",
    }
    atomic_write_text(files["table"], f"# Runs under {directory}\n\n" + markdown_table(runs))
    plot_accuracy_vs_t(runs, files["accuracy_plot"])
    plot_spike_rates(runs, files["spike_rate_plot"])
    return files
