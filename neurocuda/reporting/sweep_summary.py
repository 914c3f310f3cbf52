"""Compare finished runs (one run dir or a sweep's dir of runs) from their local files alone.

Reads each run's ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``, the CSV logger's
``csv/version_*/metrics.csv`` and offline W&B runs' logs (no W&B account or server needed); writes a
markdown table (the runs' final figures, then their learning curves epoch by epoch) and PNG plots.
Runs that differ only in their seeds (:data:`SEED_KEYS`) are replicates of one arm: the table gives
each arm of two or more runs a row of means +- standard deviations.
"""

from __future__ import annotations

import csv
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from omegaconf import OmegaConf

from neurocuda.files import atomic_write_text, save_figure
from neurocuda.reporting.accuracy_plots import AccuracyCurve, plot_accuracy_curves
from neurocuda.reporting.run_summary import SUMMARY_FILE

_ACC_T = re.compile(r"^snn/acc_T(\d+)$")
_TEST_ACC_T = re.compile(r"^test/snn_acc_T(\d+)$")
# the metrics logged once an epoch that make a learning curve: the ANN fit's accuracies, the SNN's
# at its conversions, and the fine-tuning stage's (training at its T, validation at each T)
_CURVE = re.compile(r"^(val/acc|train/acc|snn/acc_T\d+|finetune/acc|val/snn_acc_T\d+)$")
_CURVE_STAGES = ("val/acc", "train/acc", "snn/", "finetune/", "val/snn_")  # their reading order
_NIR_KEYS = ("nir/", "finetune/nir/")  # the ANN checkpoints' round trips, the fine-tuned SNN's
SEED_KEYS = frozenset({"seed", "data.shuffle_seed"})
"""Overrides that only redraw a run's randomness: initial weights and training order, and with
``seed`` (which ``data.seed`` follows) the validation split and subsets too."""


@dataclass
class RunRecord:
    """The last logged value of every metric of one run, its learning curves, and what
    identifies the run."""

    path: Path
    label: str
    arch: str
    activation: str
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    """Per-epoch values (epochs counted from 1) of each learning-curve metric; see
    :func:`epoch_values`."""
    arm: str = ""
    """:attr:`label` without the seed overrides (:data:`SEED_KEYS`): runs with the same arm are
    replicates."""
    status: str = "done"
    """``done`` (the run wrote its summary), ``failed: <its logged error>`` or ``unfinished``
    (killed, or still running)."""

    @property
    def snn_on_test(self) -> bool:
        """Whether the run reported its SNN on the test set (``test/snn_acc_T{t}``, train.py's
        end-of-run figures); otherwise its figures are the last conversion's, on validation."""
        return any(_TEST_ACC_T.match(k) for k in self.metrics)

    @property
    def snn_source(self) -> str:
        """Which SNN :attr:`snn_accuracy` measures, and on which split."""
        fine_tuned = any(k.startswith("finetune/") for k in self.metrics)
        if self.snn_on_test:
            return "fine-tuned, test" if fine_tuned else "converted, test"
        return "converted, val" if self.snn_accuracy else "–"

    @property
    def snn_accuracy(self) -> dict[int, float]:
        """SNN accuracy per T: the end-of-run test figures, else the last conversion's."""
        pattern = _TEST_ACC_T if self.snn_on_test else _ACC_T
        found = {int(m[1]): v for k, v in self.metrics.items() if (m := pattern.match(k))}
        return dict(sorted(found.items()))

    def snn_gap(self, t: int) -> float:
        """ANN minus SNN accuracy at ``t``, on the split of :attr:`snn_accuracy`."""
        return self.get(f"test/snn_gap_T{t}" if self.snn_on_test else f"snn/gap_T{t}")

    @property
    def snn_reference(self) -> float:
        """The ANN accuracy the SNN's gaps count against, on the same split."""
        return self.get("test/acc" if self.snn_on_test else "snn/ann_acc")

    def nir(self, name: str) -> float:
        """The worst ``max_abs_diff`` or ``divergent_images`` over the run's NIR round trips."""
        values = [self.metrics[p + name] for p in _NIR_KEYS if p + name in self.metrics]
        return max(values, default=math.nan)

    @property
    def mean_spike_rate(self) -> float:
        rates = [v for k, v in self.metrics.items() if k.startswith("snn/spike_rate/")]
        return sum(rates) / len(rates) if rates else math.nan

    def get(self, key: str) -> float:
        return self.metrics.get(key, math.nan)


def find_runs(*directories: str | Path) -> list[Path]:
    """Run directories (holding ``.hydra/config.yaml``) at or below each of ``directories``."""
    runs: list[Path] = []
    for directory in map(Path, directories):
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory of runs.")
        found = sorted(p.parent.parent for p in directory.glob("**/.hydra/config.yaml"))
        if not found:
            raise FileNotFoundError(
                f"No runs under {directory}: expected train.py output dirs holding "
                ".hydra/config.yaml (e.g. logs/train/multiruns/<timestamp>)."
            )
        runs += [run for run in found if run not in runs]
    return runs


def _csv_rows(run: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def _numbers(row: Mapping[str, object]) -> dict[str, float]:
    """The numeric entries of a logged row (CSV cells are strings; W&B keeps its own ``_``
    keys and media entries, both left out)."""
    found = {}
    for key, value in row.items():
        if isinstance(value, bool) or key.startswith("_") or value in ("", None):
            continue
        if isinstance(value, int | float | str):
            try:
                found[key] = float(value)
            except ValueError:
                continue
    return found


def csv_metrics(run: Path) -> dict[str, float]:
    """Last value of every metric the CSV logger wrote in run directory ``run``."""
    metrics: dict[str, float] = {}
    for row in _csv_rows(run):
        metrics.update(_numbers(row))
    return metrics


def epoch_values(rows: Iterable[Mapping[str, object]]) -> dict[str, dict[int, float]]:
    """The learning curves in logged rows (CSV logger rows or W&B history, each with its
    ``epoch``): every curve metric's last value in each epoch, epochs counted from 1. The ANN fit
    and the fine-tuning stage count their epochs apart; their metrics' names differ."""
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        values = _numbers(row)
        if "epoch" not in values:
            continue
        epoch = int(values["epoch"]) + 1
        for key, value in values.items():
            if _CURVE.match(key):
                curves.setdefault(key, {})[epoch] = value
    return curves


def _logged(run: Path) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """Last value of every metric and the learning curves, from the CSV logger and from offline
    W&B runs, if any."""
    from neurocuda.reporting.wandb_offline import read_offline_run  # loads wandb

    rows: list[Mapping[str, object]] = list(_csv_rows(run))
    for wandb_run in sorted(run.glob("wandb/offline-run-*")):
        rows.extend(read_offline_run(wandb_run)["history"])
    metrics: dict[str, float] = {}
    for row in rows:
        metrics.update(_numbers(row))
    return metrics, epoch_values(rows)


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in _load_yaml(path)] if path.exists() else []


def _load_yaml(path: Path) -> Any:
    """``OmegaConf.load(path)``; a file that is not YAML raises a ``ValueError`` naming it."""
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ValueError(
            f"{path} is not valid YAML ({detail}); is the run directory intact?"
        ) from error


def load_runs(runs: list[Path]) -> list[RunRecord]:
    """Summarize run directories, labelling each by the overrides that differ between them."""
    overrides = {run: _overrides(run) for run in runs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(runs) > 1 else set()
    summaries = []
    for run in runs:
        cfg = _load_yaml(run / ".hydra" / "config.yaml")
        differing = [o for o in overrides[run] if o not in shared]
        label = " ".join(differing)
        metrics, curves = _logged(run)
        summaries.append(
            RunRecord(
                path=run,
                label=label or run.name,
                arch=str(OmegaConf.select(cfg, "model.arch", default="?")),
                activation=str(OmegaConf.select(cfg, "model.activation", default="?")),
                metrics=metrics,
                curves=curves,
                arm=" ".join(o for o in differing if _override_key(o) not in SEED_KEYS),
                status=run_status(run),
            )
        )
    return summaries


def run_status(run: Path) -> str:
    """``done`` when the run wrote its summary file, else ``failed: <the last error its log
    holds>`` (train.py logs a failed job's error), else ``unfinished``."""
    if (run / SUMMARY_FILE).is_file():
        return "done"
    log = run / "train.log"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    errors = [line.split("] - ", 1)[-1] for line in lines if "][ERROR] - " in line]
    return f"failed: {errors[-1]}" if errors else "unfinished"


def _override_key(override: str) -> str:
    """The config key an override sets (``+seed=3`` -> ``seed``)."""
    return override.lstrip("+~").split("=", 1)[0]


def _fmt(value: float, percent: bool = False, decimals: int = 2) -> str:
    if math.isnan(value):
        return "–"
    return f"{100 * value:.{decimals}f}" if percent else f"{value:.4g}"


@dataclass(frozen=True)
class _Column:
    """A numeric column of :func:`markdown_table`: its header, its value for a run, whether it
    is a fraction shown in percent, and whether replicates show their worst (largest) value
    instead of mean +- standard deviation."""

    header: str
    value: Callable[[RunRecord], float]
    percent: bool = True
    worst: bool = False


def _ann_accuracy(run: RunRecord) -> float:
    """The ANN's validation accuracy: the one its conversions counted against, else ``val/acc``."""
    converted = run.get("snn/ann_acc")
    return run.get("val/acc") if math.isnan(converted) else converted


def _columns(runs: list[RunRecord]) -> tuple[list[_Column], list[_Column]]:
    """The numeric columns before and after the "SNN" one."""
    timesteps = sorted({t for r in runs for t in r.snn_accuracy})
    deploy_keys = sorted({k for r in runs for k in r.metrics if k.startswith("deploy/")})
    ann = [_Column("ANN val %", _ann_accuracy), _Column("ANN test %", lambda r: r.get("test/acc"))]
    snn = [
        _Column(f"SNN T={t} %", lambda r, t=t: r.snn_accuracy.get(t, math.nan)) for t in timesteps
    ]
    snn += [_Column(f"gap T={t}", lambda r, t=t: r.snn_gap(t)) for t in timesteps]  # pp
    snn += [
        _Column("spike rate", lambda r: r.mean_spike_rate, percent=False),
        _Column("NIR max diff", lambda r: r.nir("max_abs_diff"), percent=False, worst=True),
        _Column("NIR divergent", lambda r: r.nir("divergent_images"), percent=False, worst=True),
    ]
    snn += [_Column(k, lambda r, k=k: r.get(k), percent=False) for k in deploy_keys]
    return ann, snn


def _replicates(column: _Column, runs: list[RunRecord]) -> str:
    """``column`` over replicate ``runs``: mean +- sample standard deviation (the worst value for
    a ``worst`` column); runs without the value are left out."""
    values = [v for v in (column.value(r) for r in runs) if not math.isnan(v)]
    if column.worst or len(values) < 2:
        return _fmt(max(values, default=math.nan), column.percent)
    if column.percent:
        return f"{100 * mean(values):.2f} ± {100 * stdev(values):.2f}"
    return f"{mean(values):.4g} ± {stdev(values):.2g}"


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _distinct(values: Iterable[str]) -> str:
    return ", ".join(sorted(set(values)))


def markdown_table(runs: list[RunRecord]) -> str:
    """One row per run: ANN and SNN accuracy per T, gaps, spike rate, NIR diff, deployment; then
    a row per arm of two or more finished replicates (runs differing only in their seeds, see
    :attr:`RunRecord.arm`; failed and unfinished ones left out): means +- standard deviations,
    the worst NIR round trip.

    The SNN's figures are train.py's end-of-run test figures where the run has them (its
    fine-tuned SNN's, with ``finetune=snn``), else its last conversion's (a validation subset);
    the "SNN" column says which.
    """
    ann, snn = _columns(runs)
    header = ["run", "status", "arch", "act", *(c.header for c in ann), "SNN"]
    header += [c.header for c in snn]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    for r in runs:
        row = [r.label, r.status.replace("|", "/"), r.arch, r.activation]
        row += [*(_fmt(c.value(r), c.percent) for c in ann), r.snn_source]
        row += [_fmt(c.value(r), c.percent) for c in snn]
        lines.append(_markdown_row(row))
    arms: dict[str, list[RunRecord]] = {}
    for r in runs:
        arms.setdefault(r.arm, []).append(r)
    for arm, runs_of_arm in arms.items():
        group = [r for r in runs_of_arm if r.status == "done"]  # a failed run's figures are partial
        if len(group) < 2:
            continue
        base = "all runs" if len(arms) == 1 else "no other override"  # arm "": only seeds differ
        left_out = len(runs_of_arm) - len(group)
        row = [f"mean ± sd of {len(group)}: {arm or base}"]
        row += [f"{left_out} not done, left out" if left_out else "done"]
        row += [_distinct(r.arch for r in group), _distinct(r.activation for r in group)]
        row += [_replicates(c, group) for c in ann]
        row += [_distinct(r.snn_source for r in group)]
        row += [_replicates(c, group) for c in snn]
        lines.append(_markdown_row(row))
    return "\n".join(lines) + "\n"


def _curve_order(key: str) -> tuple[int, int]:
    """ANN validation, ANN training, conversions by T, fine-tuning training, its validation by T."""
    stage = next(i for i, prefix in enumerate(_CURVE_STAGES) if key.startswith(prefix))
    return stage, int(key.rsplit("_T", 1)[1]) if "_T" in key else 0


def curve_title(key: str) -> str:
    """A learning-curve metric's name in words."""
    if key in ("val/acc", "train/acc"):
        return f"ANN, {'validation' if key == 'val/acc' else 'training'}"
    if key == "finetune/acc":
        return "fine-tuning, training (at its T)"
    t = key.rsplit("_T", 1)[1]
    return f"{'fine-tuned' if key.startswith('val/') else 'converted'} SNN T={t}, validation"


def curve_keys(runs: list[RunRecord]) -> list[str]:
    """The learning-curve metrics any of ``runs`` logged, in reading order."""
    return sorted({k for r in runs for k in r.curves}, key=_curve_order)


def markdown_curves(runs: list[RunRecord]) -> str:
    """Per learning-curve metric a table: one row per run, one column per epoch (%)."""
    sections = []
    for key in curve_keys(runs):
        epochs = sorted({e for r in runs for e in r.curves.get(key, {})})
        lines = [f"### {curve_title(key)} (`{key}`, %)", ""]
        lines.append(_markdown_row(["run", *(str(e) for e in epochs)]))
        lines.append("|---|" + "---:|" * len(epochs))
        for r in runs:
            if key in r.curves:
                cells = [_fmt(r.curves[key].get(e, math.nan), True, 1) for e in epochs]
                lines.append(_markdown_row([r.label, *cells]))
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n" if sections else ""


def plot_curves(runs: list[RunRecord], path: Path) -> None:
    """The learning curves: one panel per metric (:func:`curve_keys`), one line per run."""
    keys = curve_keys(runs)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), dpi=120)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, key in zip(axes, keys, strict=False):
        for i, r in enumerate(runs):
            if key in r.curves:
                epochs = sorted(r.curves[key])
                ys = [100 * r.curves[key][e] for e in epochs]
                ax.plot(epochs, ys, ".-", color=f"C{i % 10}", label=r.label)
        ax.set_title(curve_title(key), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    # below the panels (the saved PNG's tight box takes it in), one entry per run, also for a run
    # missing from some panels (e.g. an ANN fit beside fine-tuning runs); long labels one a row
    labels = [textwrap.fill(r.label, 90) for r in runs]
    handles = [Line2D([], [], color=f"C{i % 10}", marker=".") for i in range(len(runs))]
    ncol = 1 if max(map(len, labels)) > 40 else min(3, len(runs))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=ncol, fontsize=8)
    save_figure(fig, path)


def plot_accuracy_vs_t(runs: list[RunRecord], path: Path) -> None:
    """SNN accuracy against T (log2 axis), one line per run, its ANN's accuracy on the same split
    dashed."""
    curves = []
    for r in runs:
        ann = r.snn_reference
        curves.append(AccuracyCurve(r.label, r.snn_accuracy, None if math.isnan(ann) else ann))
    plot_accuracy_curves(path, curves)


def plot_spike_rates(runs: list[RunRecord], path: Path) -> None:
    """Per-layer spike rates of every run as grouped bars."""
    layers = sorted(
        {k for r in runs for k in r.metrics if k.startswith("snn/spike_rate/")},
        key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)],
    )  # numbers compared as numbers: layers.2 before layers.10, the network's order
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


def summarize(
    directories: str | Path | Sequence[str | Path], out_dir: str | Path | None = None
) -> dict[str, Path]:
    """Write ``summary.md`` (the runs' final figures) and ``summary_accuracy_vs_T.png``; where the
    runs logged them, ``summary_curves.md`` and ``summary_curves.png`` (learning curves by epoch)
    and ``summary_spike_rates.png``. ``directories``: one or more dirs of runs; ``out_dir``
    (default: the one directory) is required with several. Returns the files written by name."""
    roots = [directories] if isinstance(directories, str | Path) else list(directories)
    if out_dir is None and len(roots) != 1:
        raise ValueError(f"{len(roots)} directories of runs: name the output dir (--out DIR).")
    runs = load_runs(find_runs(*roots))
    out = Path(out_dir or roots[0])
    out.mkdir(parents=True, exist_ok=True)
    where = ", ".join(str(root) for root in roots)
    files = {"table": out / "summary.md", "accuracy_plot": out / "summary_accuracy_vs_T.png"}
    atomic_write_text(files["table"], f"# Runs under {where}\n\n" + markdown_table(runs))
    plot_accuracy_vs_t(runs, files["accuracy_plot"])
    if curves := markdown_curves(runs):
        files["curves_table"] = out / "summary_curves.md"
        heading = f"# Learning curves of the runs under {where} (epochs from 1)\n\n"
        atomic_write_text(files["curves_table"], heading + curves)
        files["curves_plot"] = out / "summary_curves.png"
        plot_curves(runs, files["curves_plot"])
    if any(k.startswith("snn/spike_rate/") for r in runs for k in r.metrics):
        files["spike_rate_plot"] = out / "summary_spike_rates.png"
        plot_spike_rates(runs, files["spike_rate_plot"])
    return files
