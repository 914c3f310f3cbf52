"""One call that deploys a graph on a data loader and writes the report (callback and script)."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from neurocuda.deploy.base import Backend, GraphLike
from neurocuda.deploy.evaluate import deploy
from neurocuda.deploy.report import DeploymentReport, write_report

log = logging.getLogger(__name__)


def run_deployment(
    graph: GraphLike,
    backend: Backend,
    batches: Iterable,
    timesteps: int,
    output_dir: str | os.PathLike,
    max_images: int | None = None,
    calibration_batches: int = 4,
    num_classes: int = 10,
    source: str = "",
    progress: bool = True,
    calibration: Iterable | None = None,
) -> tuple[DeploymentReport, dict[str, Path]]:
    """Prepare ``backend`` on ``graph``, calibrate it on the first ``calibration_batches``
    batches of ``calibration`` (training images, e.g. :func:`neurocuda.data.calibration_loader`;
    ``None``: of ``batches``), run it on ``batches`` and write JSON/markdown/PNG reports into
    ``output_dir``."""
    backend.prepare(graph)
    source_batches = batches if calibration is None else calibration
    backend.calibrate(itertools.islice(source_batches, calibration_batches))
    report = deploy(
        backend, batches, timesteps, num_classes, max_images, progress=progress, source=source
    )
    paths = write_report(report, output_dir)
    log.info(
        "deploy=%s: accuracy %.2f%% on %d images at T=%d, %.1f images/s; report %s",
        report.target, 100 * report.accuracy, report.images, timesteps,
        report.throughput_images_per_s, paths["markdown"],
    )  # fmt: skip
    return report, paths
