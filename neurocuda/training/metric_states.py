"""Epoch metrics whose running states a checkpoint keeps, so that a resumed fit, which first
finishes the epoch of its (validation-end) checkpoint, logs the same epoch values."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

KEY = "metric_states"
"""Checkpoint key of the states."""


def save_metric_states(checkpoint: dict[str, Any], metrics: dict[str, Metric]) -> None:
    """Store each metric's running state (CPU copies) in ``checkpoint``."""
    checkpoint[KEY] = {
        name: {key: value.detach().cpu().clone() for key, value in metric.metric_state.items()}
        for name, metric in metrics.items()
    }


def load_metric_states(
    checkpoint: dict[str, Any], metrics: dict[str, Metric], device: torch.device
) -> None:
    """Put the states :func:`save_metric_states` stored back into ``metrics`` (none in files
    written before it)."""
    for name, states in checkpoint.get(KEY, {}).items():
        for key, value in states.items():
            setattr(metrics[name], key, value.to(device))
        # the restored state holds the epoch's updates; torchmetrics counts only update() calls
        # (no public setter) and would warn at compute() that there were none
        metrics[name]._update_count = max(metrics[name]._update_count, 1)
