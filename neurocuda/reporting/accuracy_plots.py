"""Accuracy against T: a markdown table, a JSON record and a PNG plot, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from neurocuda.files import atomic_write_text, save_figure


def accuracy_table_markdown(ann_accuracy: float, accuracy: dict[int, float]) -> str:
    """A markdown table: one row per T with SNN accuracy and the gap to the ANN (percent)."""
    rows = ["| T | SNN acc (%) | ANN acc (%) | gap (pp) |", "|---:|---:|---:|---:|"]
    for t, acc in sorted(accuracy.items()):
        gap = 100 * (ann_accuracy - acc)
        rows.append(f"| {t} | {100 * acc:.2f} | {100 * ann_accuracy:.2f} | {gap:.2f} |")
    return "\n".join(rows) + "\n"


def plot_accuracy_vs_t(
    path: Path, ann_accuracy: float, accuracy: dict[int, float], title: str = ""
) -> None:
    """Save a PNG of SNN accuracy against T (log2 axis) with the ANN accuracy as a line."""
    steps = sorted(accuracy)
    fig = Figure(figsize=(5, 3.5), dpi=120)  # no pyplot: no global backend state
    ax = fig.subplots()
    ax.plot(steps, [100 * accuracy[t] for t in steps], "o-", label="SNN")
    ax.axhline(100 * ann_accuracy, color="grey", linestyle="--", label="ANN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


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
