"""Lightning glue: after SNN conversion, export ``<checkpoint>.nir``, reload it, prove equality."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from callbacks.lookup import find_callback
from callbacks.snn_conversion import SNNConversion
from neurocuda.checkpoint import snn_from_checkpoint
from neurocuda.conversion import ConversionResult
from neurocuda.files import read_lightning_checkpoint
from neurocuda.nir import Executor, Profile, load
from neurocuda.nir.verify import RoundTripReport, compare, export_and_compare
from neurocuda.snn import Encoding, SpikingModel

log = logging.getLogger(__name__)


class NIRRoundTrip(L.Callback):
    """Export the latest converted SNN beside its checkpoint and re-execute it from the file.

    Runs in ``on_train_epoch_end`` after :class:`~callbacks.snn_conversion.SNNConversion` (listed
    before it), on a fixed batch of ``num_images`` validation images, at each T of the conversion
    callback (or ``timesteps``). Logs ``nir/max_abs_diff`` and ``nir/divergent_images``; a
    difference other than exactly 0.0 raises (``on_mismatch="fail"``) or warns (``"warn"``).
    """

    metric_prefix = "nir"

    def __init__(
        self,
        num_images: int = 16,
        timesteps: Sequence[int] | None = None,
        profile: Profile = "faithful",
        on_mismatch: Literal["fail", "warn"] = "fail",
        log_artifact: bool = True,
    ) -> None:
        if on_mismatch not in ("fail", "warn"):
            raise ValueError(f"nir_round_trip.on_mismatch={on_mismatch!r}: use fail or warn.")
        if num_images < 1:
            raise ValueError(f"nir_round_trip.num_images={num_images} must be >= 1.")
        self.num_images = num_images
        self.timesteps = None if timesteps is None else [int(t) for t in timesteps]
        self.profile: Profile = profile
        self.on_mismatch = on_mismatch
        self.log_artifact = log_artifact
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.checks: dict[str, RoundTripReport] = {}
        """The round-trip report of every ``.nir`` file written, by path (the run summary's)."""

    @staticmethod
    def _conversion(trainer: L.Trainer) -> SNNConversion:
        conversion = find_callback(trainer, SNNConversion)
        if conversion is None:
            raise RuntimeError(
                "NIRRoundTrip needs the SNNConversion callback (select the conversion config group "
                "or add callbacks.snn_conversion.SNNConversion before it)."
            )
        return conversion

    def verify_saved(self, trainer: L.Trainer, path: Path, checkpoint: str) -> RoundTripReport:
        """Re-execute ``path``, a ``.nir`` file not written by this process (a resumed run's,
        from before the kill), against the SNN of its ``checkpoint`` on the fixed batch, on the
        CPU; the report is recorded in :attr:`checks` (the run summary's) and returned."""
        snn, timesteps, encoding = self._saved_snn(trainer, checkpoint)
        x, y = self._fixed_batch(trainer)
        executor = Executor(load(path))
        report = compare(executor, snn.cpu(), [(x.cpu(), y.cpu())], timesteps, encoding)
        self.checks[str(path)] = report
        log.info("NIR round trip %s (written before this process): max abs diff %g, %d "
                 "divergent images", path, report.worst_diff, report.total_divergent)  # fmt: skip
        self._check_exact(path, report, timesteps)
        return report

    def _saved_snn(
        self, trainer: L.Trainer, checkpoint: str
    ) -> tuple[SpikingModel, list[int], Encoding]:
        """The SNN of ``checkpoint`` (its ANN converted with the run's settings, on the run's
        device: a conversion's float operations differ between devices, so one on the CPU of a
        file converted on a GPU was not exact), the T's and the encoding it is compared at."""
        settings = self._conversion(trainer).settings
        device = trainer.strategy.root_device
        snn = snn_from_checkpoint(checkpoint, settings, trainer.datamodule, device).snn
        return snn, self.timesteps or list(settings.timesteps), settings.encoding

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batch is None:
            loader = trainer.val_dataloaders
            loader = loader[0] if isinstance(loader, list | tuple) else loader
            if loader is None and trainer.datamodule is None:
                raise RuntimeError(
                    "NIRRoundTrip needs validation images for its fixed batch: run with a "
                    "datamodule (train.py gives one)."
                )
            if loader is None:
                loader = trainer.datamodule.val_dataloader()
            xs, ys, count = [], [], 0
            for x, y in loader:
                xs.append(x)
                ys.append(y)
                count += len(y)
                if count >= self.num_images:
                    break
            self._batch = (torch.cat(xs)[: self.num_images], torch.cat(ys)[: self.num_images])
        return self._batch

    @staticmethod
    def _paths(result: ConversionResult, trainer: L.Trainer) -> list[Path]:
        """``<checkpoint>.nir`` beside every checkpoint written for the converted weights."""
        if result.checkpoint_paths:
            return [Path(p).with_suffix(".nir") for p in result.checkpoint_paths]
        path = Path(trainer.default_root_dir) / f"snn_epoch{result.epoch}.nir"
        log.warning("No checkpoint saved at this step (is ModelCheckpoint enabled?); writing %s.",
                    path)  # fmt: skip
        return [path]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = self._conversion(trainer).latest
        if result is None or result.nir_paths or result.epoch != trainer.current_epoch:
            return
        settings = result.settings
        metadata = {
            **settings.as_metadata(),
            "epoch": int(result.epoch),
            "checkpoint": ",".join(Path(p).name for p in result.checkpoint_paths),
        }
        # the deployment callback reads the files from the result
        result.nir_paths = self._export_and_check(
            trainer, pl_module, result.snn, self._paths(result, trainer),
            self.timesteps or list(settings.timesteps), settings.encoding, metadata, result.epoch,
        )  # fmt: skip

    def _export_and_check(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        snn: SpikingModel,
        paths: Sequence[Path],
        timesteps: Sequence[int],
        encoding: Encoding,
        metadata: dict[str, Any],
        epoch: int,
        log_metrics: bool = True,
    ) -> list[Path]:
        """Write ``snn`` to ``paths``, re-execute the file on the fixed batch, log, enforce 0.0;
        return the files written."""
        x, y = self._fixed_batch(trainer)
        x = x.to(next(snn.buffers()).device)
        paths, report = export_and_compare(
            snn, paths, x, y, timesteps, encoding, self.profile, metadata
        )
        self.checks |= dict.fromkeys(map(str, paths), report)
        path = paths[0]
        diff, divergent = report.worst_diff, report.total_divergent
        if log_metrics:
            pl_module.log_dict(
                {f"{self.metric_prefix}/max_abs_diff": diff,
                 f"{self.metric_prefix}/divergent_images": float(divergent)},
                on_step=False, on_epoch=True, rank_zero_only=True,
            )  # fmt: skip
        log.info("NIR round trip %s: max abs diff %g, %d divergent images", path, diff, divergent)
        if self.log_artifact:
            self._log_artifact(trainer, path, epoch)
        self._check_exact(path, report, timesteps)
        return paths

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Give the kept checkpoint (the one ``train.py`` tests, converts and deploys: the best by
        its monitor) its verified ``.nir`` when its epoch was not a conversion epoch
        (``conversion.every_n_epochs``); the deployment and the summary read that file."""
        ckpt = trainer.checkpoint_callback
        kept = ckpt.best_model_path if ckpt is not None else ""
        if not trainer.is_global_zero or not kept or Path(kept).with_suffix(".nir").is_file():
            return
        log.info("The kept checkpoint %s was not converted during training "
                 "(conversion.every_n_epochs); converting and exporting it now.", kept)  # fmt: skip
        settings = self._conversion(trainer).settings
        converted = snn_from_checkpoint(kept, settings, trainer.datamodule, pl_module.device)
        epoch = int(read_lightning_checkpoint(kept, map_location="cpu")["epoch"])
        metadata = {**converted.settings.as_metadata(), "epoch": epoch,
                    "checkpoint": Path(kept).name}  # fmt: skip
        with torch.autocast(pl_module.device.type, enabled=False):
            self._export_and_check(
                trainer, pl_module, converted.snn, [Path(kept).with_suffix(".nir")],
                self.timesteps or list(settings.timesteps), settings.encoding, metadata, epoch,
                log_metrics=False,  # Lightning refuses self.log after the fit
            )  # fmt: skip

    def _check_exact(self, path: Path, report: RoundTripReport, timesteps: Sequence[int]) -> None:
        """Raise (``on_mismatch="fail"``) or warn unless ``report`` is exact."""
        diff, divergent = report.worst_diff, report.total_divergent
        if diff != 0.0 or divergent:
            message = (
                f"NIR round trip of {path} is not exact: max abs diff {diff} at T={timesteps}, "
                f"{divergent}/{report.images} images differ. The export or the executor no "
                "longer computes what the native SNN computes (docs/semantics.md)."
            )
            if self.on_mismatch == "fail":
                raise RuntimeError(message)
            warnings.warn(message, stacklevel=1)

    def _log_artifact(self, trainer: L.Trainer, path: Path, epoch: int) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                name = f"{self.metric_prefix.replace('/', '-')}-{logger.experiment.id}"
                artifact = wandb.Artifact(name, type="nir-graph")
                artifact.add_file(str(path), name=path.name)
                logger.experiment.log_artifact(artifact, aliases=[f"epoch{epoch}", "latest"])
