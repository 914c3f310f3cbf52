"""The images calibration reads (conversion thresholds, deploy quantization), any data module."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L


def calibration_loader(datamodule: L.LightningDataModule) -> Iterable:
    """The data module's fixed, un-augmented training images (``calibration_dataloader``) where it
    has them, else its training loader: never the images a run is evaluated on."""
    if hasattr(datamodule, "calibration_dataloader"):
        return datamodule.calibration_dataloader()
    return datamodule.train_dataloader()
