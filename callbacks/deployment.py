"""Lightning glue: after fit, deploy the final NIR graph on the configured target and report.

Hook choice: ``on_fit_end``. It runs once, after the last epoch's checkpoint and its ``.nir`` exist
(the NIR round-trip callback writes them at checkpoint time), whether or not the run also tests
(``test=false``), and before ``trainer.test`` reloads the best weights, which does not change the
``.nir`` we deploy. The test set is set up here if the data module has not done it yet. A run with
a fine-tuning stage hands this callback to the stage's trainer (``run_finetune``): it deploys the
SNN the run tests, the stage's kept checkpoint's ``.nir``, not the ANN's conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import nir
import torch

from callbacks.lookup import find_callback
from callbacks.snn_conversion import SNNConversion
from neurocuda.checkpoint import export_snn, snn_from_checkpoint
from neurocuda.conversion import ConversionConfig
from neurocuda.data.calibration import calibration_loader
from neurocuda.deploy import Backend, run_deployment
from neurocuda.deploy.report import DeploymentReport, report_metrics
from neurocuda.training import SNNFinetuneModule

log = logging.getLogger(__name__)


def _finetuned_graph(trainer: L.Trainer) -> tuple[Path, str]:
    """The ``.nir`` file of the fine-tuning stage's kept checkpoint (the SNN the run tests),
    which the stage's NIR round trip verified when it was written."""
    ckpt = trainer.checkpoint_callback
    kept = ckpt.best_model_path or ckpt.last_model_path if ckpt is not None else ""
    path = Path(kept).with_suffix(".nir")
    if not kept or not path.is_file():
        raise RuntimeError(
            f"deploy after fine-tuning needs the kept checkpoint's .nir file ({path}); keep the "
            "stage's checkpoint and NIR round-trip callbacks (finetune.callbacks)."
        )
    log.info("Deploying the fine-tuned SNN %s", path)
    return path, str(path)


class Deployment(L.Callback):
    """Deploy on ``backend`` (built by Hydra from ``deploy.backend``) at the end of fit; write the
    report.

    The graph is the ``.nir`` file the NIR round-trip callback verified for the last conversion
    (handed over on the :class:`~neurocuda.conversion.ConversionResult`); see :meth:`_graph`.
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
        self.report: DeploymentReport | None = None
        self.report_paths: dict[str, Path] = {}
        """The report's files (``json``, ``markdown``, ``plot``)."""

    @staticmethod
    def _graph(trainer: L.Trainer, sample: torch.Tensor) -> tuple[nir.NIRGraph | Path, str]:
        """The kept checkpoint's verified ``.nir`` file (the ANN ``train.py`` tests and converts:
        the best by the checkpoint's monitor, or the last epoch); else the last conversion's;
        without one, its SNN (or, without the conversion callback, the last checkpoint converted
        with the default settings) exported."""
        if isinstance(trainer.lightning_module, SNNFinetuneModule):
            return _finetuned_graph(trainer)
        conversion = find_callback(trainer, SNNConversion)
        ckpt = trainer.checkpoint_callback
        kept = Path(ckpt.best_model_path).with_suffix(".nir") if ckpt is not None else None
        if conversion is not None and kept is not None and ckpt.best_model_path and kept.is_file():
            log.info("Deploying %s", kept)
            return kept, str(kept)
        result = conversion.latest if conversion is not None else None
        if result is not None and result.nir_paths:
            log.info("Deploying %s", result.nir_paths[0])
            return result.nir_paths[0], str(result.nir_paths[0])
        if result is not None:
            snn, settings = result.snn, result.settings
        else:
            ckpt = trainer.checkpoint_callback
            path = ckpt.last_model_path or ckpt.best_model_path if ckpt is not None else ""
            if not path:
                raise RuntimeError(
                    "deploy needs a converted model: enable the conversion config group or a "
                    "ModelCheckpoint callback (callbacks=default)."
                )
            settings = conversion.settings if conversion is not None else ConversionConfig()
            converted = snn_from_checkpoint(path, settings, trainer.datamodule)
            snn, settings = converted.snn, converted.settings
        log.info("No verified .nir file from this run; exported the converted model to deploy.")
        return export_snn(snn, settings, sample), "trained module"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # under DDP one process deploys and writes the report
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise RuntimeError("Deployment needs a LightningDataModule with a test_dataloader.")
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        sample = next(iter(loader))[0]
        with torch.autocast(pl_module.device.type, enabled=False):
            graph, source = self._graph(trainer, sample)
            out_dir = Path(self.output_dir or trainer.default_root_dir) / "deploy"
            report, self.report_paths = run_deployment(
                graph, self.backend, loader, self.timesteps, out_dir, self.max_images,
                self.calibration_batches, source=source,
                calibration=calibration_loader(datamodule),
            )  # fmt: skip
        self.report = report
        for logger in trainer.loggers:
            logger.log_metrics(report_metrics(report), step=trainer.global_step)
