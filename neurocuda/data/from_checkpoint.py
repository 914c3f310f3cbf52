"""The datamodule a checkpoint was trained with, rebuilt from its saved hyperparameters.

Conversion calibrates on the training split's fixed calibration images, so re-converting a
checkpoint reproduces its thresholds and membranes only with the same data settings (validation
split, seed, batch size). ``train.py`` saves them in the checkpoint
(``datamodule_hyper_parameters``).
"""

from __future__ import annotations

import os
from typing import Any

from neurocuda.data.cifar10 import CIFAR10DataModule
from neurocuda.files import read_lightning_checkpoint


class CheckpointDataError(ValueError):
    """The checkpoint holds no datamodule settings."""


def datamodule_from_checkpoint(
    checkpoint: str | os.PathLike, **overrides: Any
) -> CIFAR10DataModule:
    """``CIFAR10DataModule`` with the checkpoint's saved settings, ``overrides`` replacing some."""
    saved = read_lightning_checkpoint(checkpoint, map_location="cpu", weights_only=False).get(
        "datamodule_hyper_parameters"
    )
    if not saved:
        raise CheckpointDataError(
            f"{checkpoint} holds no datamodule settings (it was not written by train.py), so the "
            "data it was trained and calibrated on cannot be reproduced; give the data settings "
            "explicitly."
        )
    return CIFAR10DataModule(**{**saved, **overrides})
