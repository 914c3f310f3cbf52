"""Training: the LightningModule and the pieces train.py instantiates."""

from neurocuda.training.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
