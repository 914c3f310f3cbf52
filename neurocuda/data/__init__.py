"""CIFAR-10 data: sources (JPEG archive, torchvision batches, download) and the DataModule."""

from neurocuda.data.cifar10 import CIFAR10DataModule
from neurocuda.data.errors import DatasetNotFoundError

__all__ = ["CIFAR10DataModule", "DatasetNotFoundError"]
