"""Training: the LightningModules and the pieces train.py instantiates."""

from neurocuda.training.classifier import ClassifierModule
from neurocuda.training.snn_finetune import SNNFinetuneModule

__all__ = ["ClassifierModule", "SNNFinetuneModule"]
