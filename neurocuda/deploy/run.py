"""One call that deploys a graph on a data loader and writes the report (callback and script)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from neurocuda.deploy import build_backend, deploy
from neurocuda.deploy.base import GraphLike
from neurocuda.deploy.evaluate import DeploymentReport
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.reporting.deployment_report import write_report

log = logging.getLogger(__name__)


def run_deployment(
    graph: GraphLike,
    target: str,
    batches: Iterable,
    timesteps: int,
    output_dir: str | os.PathLike,
    max_images: int | None = None,
    options: Mapping[str, Any] | None = None,
    calibration_batches: int = 4,
    num_classes: int = 10,
    source: str = "",
    progress: bool = True,
) -> tuple[DeploymentReport, dict[str, Path]]:
    """Prepare ``target`` on ``graph``, run it on ``batches``, write JSON/markdown/PNG reports."""
    backend = build_backend(target, **(dict(options or {}) if target == "loihi2" else {}))
    backend.prepare(graph)
    if isinstance(backend, Loihi2Backend) and backend.input_encoding is None:
        backend.calibrate(InputEncoding.from_batches(batches, calibration_batches))
    report = deploy(
        backend, batches, timesteps, num_classes, max_images, progress=progress, source=source
    )
    paths = write_report(report, output_dir)
    log.info(
        "deploy=%s: accuracy %.2f%% on %d images at T=%d, %.1f images/s; report %s",
        target, 100 * report.accuracy, report.images, timesteps,
        report.throughput_images_per_s, paths["markdown"],
    )  # fmt: skip
    return report, paths


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
