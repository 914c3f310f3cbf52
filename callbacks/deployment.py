"""Lightning glue: after fit, deploy the final NIR graph on the configured target and report.

Hook choice: ``on_fit_end``. It runs once, after the last epoch's checkpoint and its ``.nir`` exist
(the NIR round-trip callback writes them at checkpoint time), whether or not the run also tests
(``test=false``), and before ``trainer.test`` reloads the best weights, which does not change the
``.nir`` we deploy. The test set is set up here if the data module has not done it yet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from neurocuda.deploy import Backend, run_deployment
from neurocuda.deploy.report import report_metrics

log = logging.getLogger(__name__)


def _nir_candidates(trainer: L.Trainer) -> list[Path]:
    """The NIR round-trip callback's last file first, then ``.nir`` files beside checkpoints."""
    found = [Path(c.last_path) for c in trainer.callbacks if getattr(c, "last_path", None)]
    ckpt = trainer.checkpoint_callback
    if ckpt is None:
        return [p for p in found if p.is_file()]
    paths = [p for p in (ckpt.last_model_path, ckpt.best_model_path) if p]
    found += [Path(p).with_suffix(".nir") for p in paths] + [Path(p + ".nir") for p in paths]
    if ckpt.dirpath and Path(ckpt.dirpath).is_dir():
        found += sorted(Path(ckpt.dirpath).glob("*.nir"), key=lambda p: p.stat().st_mtime)[::-1]
    return [p for p in found if p.is_file()]


class Deployment(L.Callback):
    """Deploy on ``backend`` (built by Hydra from ``deploy.backend``) at the end of fit; write the
    report.

    The graph is the newest ``<checkpoint>.nir``; without one, the trained module is converted
    (reusing the SNNConversion callback's latest SNN when there is one) and exported here.
    """

    def __init__(
        self,
        backend: Backend,
        timesteps: int = 8,
        max_images: int | None = 1000,
        calibration_batches: int = 4,
        output_dir: str | None = None,
    ) -> None:
        self.backend = backend
        self.timesteps = int(timesteps)
        self.max_images = max_images
        self.calibration_batches = calibration_batches
        self.output_dir = output_dir
        self.report = None

    def _graph(self, trainer: L.Trainer, pl_module: L.LightningModule, sample: torch.Tensor):
        candidates = _nir_candidates(trainer)
        if candidates:
            log.info("Deploying %s", candidates[0])
            return candidates[0], str(candidates[0])
        from neurocuda.conversion import ConversionConfig, convert
        from neurocuda.nir import export

        conversion = next((c for c in trainer.callbacks if hasattr(c, "latest")), None)
        snn = conversion.latest.snn if conversion is not None and conversion.latest else None
        if snn is None:
            config = ConversionConfig(input_shape=tuple(sample.shape[1:]))
            if conversion is not None:
                config = conversion.config
            snn = convert(pl_module.net, trainer.train_dataloader, config)
        log.info("No <checkpoint>.nir found; exported the trained model for deployment.")
        return export(snn, sample[:2].to(next(snn.parameters(), sample).device)), "trained module"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            raise RuntimeError("Deployment needs a LightningDataModule with a test_dataloader.")
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        sample = next(iter(loader))[0]
        with torch.autocast(pl_module.device.type, enabled=False):
            graph, source = self._graph(trainer, pl_module, sample)
            out_dir = Path(self.output_dir or trainer.default_root_dir) / "deploy"
            report, _ = run_deployment(
                graph, self.backend, loader, self.timesteps, out_dir, self.max_images,
                self.calibration_batches, source=source, progress=False,
            )  # fmt: skip
        self.report = report
        for logger in trainer.loggers:
            logger.log_metrics(report_metrics(report), step=trainer.global_step)
