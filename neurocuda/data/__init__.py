"""CIFAR-10 data: sources (JPEG archive, torchvision batches, download) and the DataModule."""

from neurocuda.data.calibration import calibration_loader
from neurocuda.data.cifar10 import CIFAR10DataModule
from neurocuda.data.errors import CorruptDatasetError, DatasetNotFoundError
from neurocuda.data.from_checkpoint import CheckpointDataError, datamodule_from_checkpoint

__all__ = [
    "CIFAR10DataModule",
    "CheckpointDataError",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "calibration_loader",
    "datamodule_from_checkpoint",
]
