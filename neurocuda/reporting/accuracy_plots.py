"""Accuracy against T: a markdown table, a JSON record and a PNG plot, written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from neurocuda.files import atomic_write_text, save_figure


def accuracy_table_markdown(ann_accuracy: float, accuracy: dict[int, float]) -> str:
    """A markdown table: one row per T with SNN accuracy and the gap to the ANN (percent)."""
    rows = ["| T | SNN acc (%) | ANN acc (%) | gap (pp) |", "|---:|---:|---:|---:|"]
    for t, acc in sorted(accuracy.items()):
        gap = 100 * (ann_accuracy - acc)
        rows.append(f"| {t} | {100 * acc:.2f} | {100 * ann_accuracy:.2f} | {gap:.2f} |")
    return "\n".join(rows) + "\n"


@dataclass
class AccuracyCurve:
    """One SNN's accuracy (fraction) per T, with its ANN's accuracy when known."""

    label: str
    accuracy: dict[int, float]
    ann_accuracy: float | None = None


def plot_accuracy_curves(
    path: Path, curves: list[AccuracyCurve], title: str = "SNN accuracy per T (dashed: ANN)"
) -> None:
    """Save a PNG of SNN accuracy against T (log2 axis), one line per curve, each ANN dashed in
    its curve's colour (an ANN shared by several curves is drawn once)."""
    plot_accuracy_panels(path, {title: curves})


def plot_accuracy_panels(path: Path, panels: dict[str, list[AccuracyCurve]]) -> None:
    """:func:`plot_accuracy_curves` with one panel per title (e.g. one per model), two a row."""
    wide = any(len(curves) > 1 for curves in panels.values())
    width, height = (7, 4.5) if wide else (5, 3.5)
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=120)  # no pyplot: no global state
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (title, curves) in zip(axes, panels.items(), strict=False):  # a spare panel or none
        _draw(ax, curves)
        ax.set_title(title)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(fig, path)


def _draw(ax: Axes, curves: list[AccuracyCurve]) -> None:
    drawn: set[float] = set()
    steps: set[int] = set()
    for i, curve in enumerate(curves):
        color = f"C{i % 10}"
        ts = sorted(curve.accuracy)
        steps.update(ts)
        if ts:
            ys = [100 * curve.accuracy[t] for t in ts]
            ax.plot(ts, ys, "o-", color=color, label=curve.label)
        if curve.ann_accuracy is not None and curve.ann_accuracy not in drawn:
            drawn.add(curve.ann_accuracy)
            ax.axhline(100 * curve.ann_accuracy, color=color, linestyle="--", linewidth=0.8)
    ax.set_xscale("log", base=2)
    if steps:
        ax.set_xticks(sorted(steps), [str(t) for t in sorted(steps)])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no legend (and no warning) for a panel without lines
        ax.legend(fontsize=7 if len(curves) > 3 else None)


def plot_accuracy_vs_t(
    path: Path, ann_accuracy: float, accuracy: dict[int, float], title: str = ""
) -> None:
    """Save a PNG of one SNN's accuracy against T (log2 axis) with the ANN accuracy dashed."""
    plot_accuracy_curves(path, [AccuracyCurve("SNN (dashed: ANN)", accuracy, ann_accuracy)], title)


def save_accuracy_report(
    prefix: Path, ann_accuracy: float, accuracy: dict[int, float], extra: dict | None = None
) -> list[Path]:
    """Write ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png``; return their paths."""
    md, js, png = (prefix.with_name(prefix.name + ext) for ext in (".md", ".json", ".png"))
    atomic_write_text(md, accuracy_table_markdown(ann_accuracy, accuracy))
    record = {
        "ann_accuracy": ann_accuracy,
        "snn_accuracy": {str(t): a for t, a in accuracy.items()},
    }
    atomic_write_text(js, json.dumps(record | (extra or {}), indent=2))
    plot_accuracy_vs_t(png, ann_accuracy, accuracy, title=prefix.name)
    return [md, js, png]
