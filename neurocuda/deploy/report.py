"""The deployment report: what a run measured, written as JSON, markdown and a PNG plot."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neurocuda.files import atomic_write_text, save_figure
from neurocuda.reporting.run_summary import DeploymentSummary


@dataclass
class LayerReport:
    """Per-image activity of one population."""

    name: str
    neurons: int
    spikes_per_image: float
    spike_rate: float
    synops_per_image: float
    neuron_updates_per_image: float


@dataclass
class DeploymentReport:
    """Everything a deployment run measured; :func:`as_dict` is what the JSON file holds."""

    target: str
    timesteps: int
    images: int
    accuracy: float
    latency_timesteps: int
    throughput_images_per_s: float
    wall_seconds: float
    layers: list[LayerReport]
    energy: dict
    target_info: dict
    saturation: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def markdown(report: DeploymentReport) -> str:
    """Human-readable summary with the per-layer tables."""
    e = report.energy
    info = report.target_info
    lines = [
        f"# Deployment report: {report.target}",
        "",
        f"- source: `{report.source}`" if report.source else "",
        f"- accuracy: **{report.accuracy * 100:.2f}%** on {report.images} images at "
        f"T={report.timesteps}",
        f"- latency: {report.latency_timesteps} timesteps; throughput: "
        f"{report.throughput_images_per_s:.1f} images/s ({report.wall_seconds:.2f} s)",
        f"- per image: {e['synops']:.4g} synaptic ops, {e['neuron_updates']:.4g} neuron updates, "
        f"ANN {e['ann_macs']:.4g} MACs",
        f"- energy per image: Loihi estimate {e['loihi_uj']:.3f} uJ; "
        f"ANN fp32 {e['ann_fp32_uj']:.3f} uJ "
        f"(int8 {e['ann_int8_uj']:.3f} uJ); SNN as fp32 accumulates {e['snn_ac_uj']:.3f} uJ",
        f"- saturation / wrap counts: {report.saturation or 'none recorded by this target'}",
    ]
    if "quantization" in info:
        lines.append(
            f"- quantization: {info['quantization_saturations']} values clipped to fit "
            f"Loihi widths; pipeline depth {info['pipeline_depth']}"
        )
    lines += [
        "",
        "| layer | neurons | spikes/img | rate | synops/img | neuron upd/img |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report.layers:
        lines.append(
            f"| {row.name} | {row.neurons} | {row.spikes_per_image:.1f} | {row.spike_rate:.4f} | "
            f"{row.synops_per_image:.4g} | {row.neuron_updates_per_image:.4g} |"
        )
    if "quantization" in info:
        lines += _quantization_table(info["quantization"])
    if "resources" in info:
        r = info["resources"]
        lines += [
            "",
            f"## Loihi 2 mapping: {r['cores']} neuro-cores, {r['chips']} chip(s)",
            "",
            "| layer | neurons | synapses | fan-in | weight bytes | cores | limited by |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in r["layers"]:
            flag = " (fan-in > axons/core)" if row["fan_in_exceeds_axons"] else ""
            lines.append(
                f"| {row['name']} | {row['neurons']} | {row['synapses']} | {row['fan_in']}{flag} | "
                f"{row['weight_bytes']} | {row['cores']} | {row['limited_by']} |"
            )
    lines += ["", "Energy figures: " + "; ".join(f"{k}: {v}" for k, v in e["sources"].items()), ""]
    return "\n".join(line for line in lines if line is not None)


def _quantization_table(quantization: dict) -> list[str]:
    """Per-layer weight exponents, relative weight error, channel gains and clipped values."""
    encoding = quantization["input_encoding"]
    lines = [
        "",
        "## Quantization (8-bit weight mantissas, 24-bit membranes)",
        "",
        f"Graded input: signed 8-bit payloads, per-channel scale {_values(encoding['scale'])}, "
        f"offset {_values(encoding['offset'])}.",
        "",
        "| layer | membrane LSB | weight exponents | weight rel. error | channel gains | "
        "clipped weights / biases / thresholds |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for q in quantization["layers"]:
        gains = q["channel_gains"]
        lines.append(
            f"| {q['name']} | {q['membrane_lsb']:.3g} | {q['weight_exps']} | "
            f"{100 * q['weight_rel_error']:.2f}% | {min(gains):g}-{max(gains):g} | "
            f"{q['clipped_weights']} / {q['clipped_biases']} / {q['clipped_thresholds']} |"
        )
    return lines


def _values(value: float | list[float]) -> str:
    items = value if isinstance(value, list) else [value]
    return "[" + ", ".join(f"{v:.4g}" for v in items) + "]"


def plot(report: DeploymentReport, path: Path) -> None:
    """Per-layer spike rate and synaptic ops vs ANN MACs, one PNG."""
    from matplotlib.figure import Figure  # here, so that importing the deploy core stays light

    fig = Figure(figsize=(12, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    xs = range(len(report.layers))
    ax1.bar(xs, [row.spike_rate for row in report.layers], color="tab:blue")
    _layer_ticks(ax1, [row.name for row in report.layers])  # the markdown table's names
    ax1.set_ylabel("spikes / neuron / step")
    ax1.set_title(f"{report.target}: spike rate per layer")
    rows = report.energy["layers"]  # by source population (the output layer included)
    xs = range(len(rows))
    ax2.bar([x - 0.2 for x in xs], [r["synops"] for r in rows], width=0.4, label="SNN synops")
    ax2.bar([x + 0.2 for x in xs], [r["ann_macs"] for r in rows], width=0.4, label="ANN MACs")
    _layer_ticks(ax2, [r["name"] for r in rows])
    ax2.set_yscale("log")
    ax2.set_title("operations per image")
    ax2.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _layer_ticks(axes: Any, names: list[str]) -> None:
    """Label bars 0..n-1 with the layers' names (numeric positions: names that look like numbers
    made matplotlib warn about categorical units)."""
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes.set_xlabel("layer")


def write_report(report: DeploymentReport, directory: str | os.PathLike) -> dict[str, Path]:
    """Write ``deploy_<target>.json``, ``.md`` and ``.png`` into ``directory``; return the paths."""
    out = Path(directory)
    stem = f"deploy_{report.target}"
    paths = {
        "json": out / f"{stem}.json",
        "markdown": out / f"{stem}.md",
        "plot": out / f"{stem}.png",
    }
    atomic_write_text(paths["json"], json.dumps(report.as_dict(), indent=2))
    atomic_write_text(paths["markdown"], markdown(report))
    plot(report, paths["plot"])
    return paths


def report_metrics(report: DeploymentReport) -> dict[str, float]:
    """Flat scalars for loggers: ``deploy/<target>/<name>``."""
    prefix = f"deploy/{report.target}"
    metrics = {
        f"{prefix}/accuracy": report.accuracy,
        f"{prefix}/throughput_images_per_s": report.throughput_images_per_s,
        f"{prefix}/latency_timesteps": float(report.latency_timesteps),
        f"{prefix}/synops_per_image": float(report.energy["synops"]),
        f"{prefix}/energy_uj_loihi": float(report.energy["loihi_uj"]),
        f"{prefix}/energy_uj_ann_fp32": float(report.energy["ann_fp32_uj"]),
    }
    resources = report.target_info.get("resources")
    if resources:
        metrics[f"{prefix}/cores"] = float(resources["cores"])
        metrics[f"{prefix}/chips"] = float(resources["chips"])
    return metrics


def summarize(report: DeploymentReport, report_path: str | os.PathLike) -> DeploymentSummary:
    """The figures of ``report`` that a run's summary shows (accuracy, cores/chips, energy)."""
    resources = report.target_info.get("resources") or {}
    return DeploymentSummary(
        target=report.target,
        accuracy=report.accuracy,
        images=report.images,
        timesteps=report.timesteps,
        energy_uj_per_image=float(report.energy["loihi_uj"]),
        ann_fp32_uj_per_image=float(report.energy["ann_fp32_uj"]),
        report_path=str(report_path),
        source=report.source,
        cores=resources.get("cores"),
        chips=resources.get("chips"),
    )
